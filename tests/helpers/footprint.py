"""What an idle ``zoldyq serve`` costs in memory, per process, from ``/proc/PID/smaps_rollup``.

PSS (proportional set size) splits each shared page between the processes that map it,
so the processes' PSS add up to the memory the server really holds; RSS would count a
page the launcher shares with its four children five times.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

from tests.helpers import servers


class Usage(NamedTuple):
    pid: int
    title: str  # the process's cmdline (the forked children name themselves)
    pss_kb: int
    anon_kb: int  # Pss_Anon: the part the other processes of the box do not change
    rss_kb: int


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo += children.get(p, [])
    return found


def usage(pid: int) -> Usage:
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        title = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    return Usage(pid, title, fields.get("Pss", 0), fields.get("Pss_Anon", 0),
                 fields.get("Rss", 0))


def idle_serve(namespace: str, workers: int = 2, settle: float = 1.0) -> list[Usage]:
    """Start ``zoldyq serve`` (HTTP + sidecar), let it idle ``settle`` s past readiness
    (one ``GET /health``), and measure each of its processes."""
    with servers.serve(namespace, workers=workers) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        time.sleep(settle)
        return [usage(p) for p in descendants(srv.pid)]
