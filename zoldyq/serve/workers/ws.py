"""The WebSocket sidecar: ``python -m zoldyq.serve.workers.ws`` (settings from ZOLDYQ_* env)."""

from __future__ import annotations

import sys

from zoldyq.errors import ConfigError
from zoldyq.settings import Settings
from zoldyq.ws import run


def main() -> int:
    try:
        settings = Settings.load()
    except ConfigError as ex:
        print(f"zoldyq ws: {ex}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
