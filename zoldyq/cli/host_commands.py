"""``zoldyq namespaces``: this host's shared memory, not a server's."""

from __future__ import annotations

import argparse
import sys

import orjson

from zoldyq import broker as host
from zoldyq.cli.term import table

NAMES = ("namespaces",)


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("namespaces", help="this host's namespaces: size, user, server, processes")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def run(args: argparse.Namespace) -> int:
    rows = host.namespaces()
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows) + b"\n")
    elif rows:
        print(table([(r["namespace"], r["queues"], r["bytes"], r["user"], r["server"] or "-",
                      ",".join(map(str, r["pids"])) or "-") for r in rows],
                    ("NAMESPACE", "QUEUES", "BYTES", "USER", "SERVER", "PROCESSES")))
    else:
        print("no namespaces on this host")
    return 0
