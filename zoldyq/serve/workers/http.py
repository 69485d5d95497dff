"""The gunicorn app module (``zoldyq.serve.workers.http:app``); workers attach after the fork.

``app`` is built when gunicorn asks for it, not at import: the launcher imports this
module before forking (so the master does not run the import machinery again) without
attaching to the namespace."""

from typing import Any

from zoldyq.http import create_app
from zoldyq.serve import current


def __getattr__(name: str) -> Any:
    if name == "app":
        return create_app(current.settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
