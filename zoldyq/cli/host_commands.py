"""``zoldyq namespaces`` and ``zoldyq destroy``: this host's shared memory, not a server's."""

from __future__ import annotations

import argparse
import sys

import orjson

import zoldyq
from zoldyq import broker as host
from zoldyq import settings as settings_mod
from zoldyq.cli.term import table
from zoldyq.errors import ZoldyQError

NAMES = ("namespaces", "destroy")


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("namespaces", help="list this host's namespaces (size, user, processes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = sub.add_parser("destroy", help="delete a namespace and every queue in it")
    p.add_argument("name", nargs="?", help="the namespace (default: the configured one)")
    p.add_argument("--force", action="store_true",
                   help="even while other processes (a server) are attached")
    settings_mod.add_arguments(p, only=("namespace",))


def run(args: argparse.Namespace) -> int:
    if args.command == "namespaces":
        rows = host.namespaces()
        if args.json:
            sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
        elif rows:
            print(table([(r["namespace"], r["queues"], r["bytes"], r["user"],
                          ",".join(map(str, r["pids"])) or "-") for r in rows],
                        ("NAMESPACE", "QUEUES", "BYTES", "USER", "PROCESSES")))
        else:
            print("no namespaces on this host")
        return 0
    try:
        ns = args.name or settings_mod.from_args(args).namespace
        zoldyq.api.check_namespace(ns)
        if not any(r["namespace"] == ns for r in host.namespaces()):
            print(f"zoldyq: namespace '{ns}' does not exist on this host", file=sys.stderr)
            return 1
        others = host.attached_pids(ns)
        if others and not args.force:
            print(f"zoldyq: namespace '{ns}' is in use by process(es) "
                  f"{', '.join(map(str, others))} (a server?): stop them first, or --force",
                  file=sys.stderr)
            return 1
        zoldyq.destroy(ns)
    except ZoldyQError as ex:
        print(f"zoldyq: {ex}", file=sys.stderr)
        return 2
    print(f"destroyed namespace '{ns}'")
    return 0
