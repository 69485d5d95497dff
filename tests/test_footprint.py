"""Memory an idle ``zoldyq serve`` costs, all its processes counted (PSS, so shared pages
are split between the processes that share them, not counted once per process)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.helpers import servers

#: The issue's target is 50 MB; measured 84 MB on this VM after the lazy imports (it was
#: 89-97 MB), and 98-100 MB once the Redis engine, leases and the client landed (launcher
#: ~15, master 17, two workers 22 each, sidecar 23). This bound catches a regression;
#: reaching 50 MB (preloading the app before fork, a leaner sidecar) is open work (README).
IDLE_PSS_BOUND_KB = 110 * 1024


def descendants(pid: int) -> list[int]:
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


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def test_idle_serve_stays_within_its_measured_footprint(namespace: str) -> None:
    """An idle launcher + gunicorn master + 2 workers + sidecar stay under the bound."""
    with servers.serve(namespace, workers=2) as srv:
        time.sleep(1.0)  # workers booted and idle
        pids = descendants(srv.pid)
        assert len(pids) >= 5, pids  # launcher, master, 2 workers, sidecar
        total = sum(pss_kb(p) for p in pids)
    assert total <= IDLE_PSS_BOUND_KB, f"idle serve PSS {total / 1024:.1f} MB"


def test_the_cli_imports_no_metrics_or_asyncio() -> None:
    """The ``zoldyq`` command (the launcher's process) loads neither prometheus-client
    nor asyncio until a command needs them."""
    code = ("import sys, zoldyq.cli.main; "
            "print(sorted(m for m in ('asyncio', 'prometheus_client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
