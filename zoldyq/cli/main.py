"""The ``zoldyq`` command."""

from __future__ import annotations

import argparse
import json
import sys

from zoldyq import settings as settings_mod
from zoldyq.cli import commands
from zoldyq.errors import ZoldyQError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoldyq", description="ZoldyQ message broker")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server and the WebSocket sidecar")
    settings_mod.add_arguments(serve)
    ws = sub.add_parser("ws", help="run only the WebSocket sidecar")
    settings_mod.add_arguments(ws)
    config = sub.add_parser("config", help="print the effective settings")
    settings_mod.add_arguments(config)
    destroy = sub.add_parser(
        "destroy", help="delete the namespace: every queue and message (on Redis, for every "
        "front end; stopping a server never does)")
    settings_mod.add_arguments(destroy, only=("namespace", "backend", "redis_password_file"))
    commands.add_parsers(sub)
    args = commands.parse_args(parser, argv)
    if args.command in commands.NAMES:
        return commands.run(args)
    try:
        settings = settings_mod.from_args(args)
        if args.command == "config":
            print(json.dumps(settings.public(), indent=2))
            return 0
        if args.command == "destroy":
            from zoldyq.broker import destroy_namespace

            destroy_namespace(settings)
            print(f"namespace '{settings.namespace}' destroyed")
            return 0
        if args.command == "ws":
            from zoldyq.ws import run as run_ws

            return run_ws(settings, standalone=True)
        try:
            from zoldyq.serve.launcher import run
        except ImportError:
            print("zoldyq: HTTP server not built yet", file=sys.stderr)
            return 2
        return run(settings)
    except ZoldyQError as ex:
        print(f"zoldyq: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
