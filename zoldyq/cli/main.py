"""The ``zoldyq`` command."""

from __future__ import annotations

import argparse
import json
import sys

import zoldyq
from zoldyq import broker as engine
from zoldyq import settings as settings_mod
from zoldyq.cli import commands, host_commands
from zoldyq.errors import ZoldyQError


class _Version(argparse.Action):
    """``--version``, reading the version only when asked (importlib.metadata is heavy)."""

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"zoldyq {zoldyq.__version__}")
        parser.exit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zoldyq", description="ZoldyQ message broker")
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP server and the WebSocket sidecar")
    settings_mod.add_arguments(serve)
    ws = sub.add_parser("ws", help="run only the WebSocket sidecar")
    settings_mod.add_arguments(ws)
    config = sub.add_parser("config", help="print the effective settings")
    settings_mod.add_arguments(config)
    destroy = sub.add_parser("destroy", help="delete a namespace, its queues and messages "
                             "(refused while a server serves it)")
    settings_mod.add_arguments(destroy, only=("namespace", "backend", "redis_password_file"))
    destroy.add_argument("--force", action="store_true",
                         help="even while a server serves it (that server then exits 1)")
    commands.add_parsers(sub)
    host_commands.add_parsers(sub)
    args = commands.parse_args(parser, argv)
    if args.command in commands.NAMES:
        return commands.run(args)
    if args.command in host_commands.NAMES:
        return host_commands.run(args)
    try:
        settings = settings_mod.from_args(args)
        if getattr(args, "token", None):
            print("zoldyq: warning: a --token value shows in ps to every user of this host; "
                  "use ZOLDYQ_TOKEN or --token-file", file=sys.stderr)
        if args.command == "destroy":
            if engine.is_shared(settings):  # Redis: front ends never own it, nothing to refuse
                engine.destroy_namespace(settings)
                print(f"namespace '{settings.namespace}' destroyed")
                return 0
            return _destroy(settings.namespace, args.force)
        if args.command == "config":
            print(json.dumps(settings.public(), indent=2))
            return 0
        if args.command == "ws":
            from zoldyq.ws import run as run_ws

            return run_ws(settings, standalone=True)
        from zoldyq.serve.launcher import run

        return run(settings)
    except ZoldyQError as ex:
        print(f"zoldyq: {ex}", file=sys.stderr)
        return 2


def _destroy(namespace: str, force: bool) -> int:
    pid = engine.holder(namespace)
    if pid is not None and not force:
        served = "a live server" + ("" if pid < 0 else f" (pid {pid})")
        print(f"zoldyq: namespace '{namespace}' is served by {served}: stop it first, or "
              "pass --force (that server then stops and exits 1)", file=sys.stderr)
        return 1
    engine.destroy(namespace)
    print(f"namespace '{namespace}' destroyed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
