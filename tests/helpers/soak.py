#!/usr/bin/env python
"""Soak: mixed traffic for a bounded time; RSS, open fds and /dev/shm sampled every second.

Usage: .venv/bin/python scripts/soak [--seconds 300] [--rate 150] [--workers 3]
                                        [--csv soak.csv] [--png docs/soak.png]

The same server and clients as ``scripts/chaos`` (``zoldyq serve`` with its
gunicorn workers and sidecar; producers over HTTP, WebSocket and the local API,
consumers on each), with no kills. Every second it samples, for each server
process (launcher, which is gunicorn's master; each worker; sidecar), its resident memory
(``VmRSS``, split into private ``RssAnon`` and shared ``RssShmem``) and open file
descriptors, and the bytes the namespace holds in ``/dev/shm``. VmRSS alone would
look like a leak: it counts the pages of the shared rings a process has touched,
which grow with the write position until it has gone once round each ring; those
are the namespace's memory, counted in /dev/shm. The queues get
``--queue-max-bytes`` rings so that they fill up within the run. Writes the samples
as CSV (``t,process,pid,rss_kb,private_kb,shared_kb,fds,shm_bytes``),
optionally a plot (matplotlib, in the ``bench`` extra), and checks they are flat
after warm-up (``flat()``: exit status 1 otherwise), besides the chaos report's
invariants (nothing lost, duplicated or corrupted).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.helpers.chaos import Run, chaos, render, server_processes  # noqa: E402

FIELDS = ["t", "process", "pid", "rss_kb", "private_kb", "shared_kb", "fds", "shm_bytes"]
# Tolerances of flat(): why in the docstring
RSS_SLACK_KB = 3 << 10
RSS_SLACK_FRACTION = 0.05
FD_SLACK = 2


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS, and its private part (RssAnon) and shared-memory part (RssShmem), in KiB."""
    out = {"rss_kb": 0, "private_kb": 0, "shared_kb": 0}
    keys = {"VmRSS:": "rss_kb", "RssAnon:": "private_kb", "RssShmem:": "shared_kb"}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            key = keys.get(line.split(":", 1)[0] + ":")
            if key:
                out[key] = int(line.split()[1])
    return out


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def shm_bytes(namespace: str) -> int:
    """Bytes the namespace's shared memory objects and semaphores occupy in /dev/shm."""
    total = 0
    with os.scandir("/dev/shm") as it:
        for entry in it:
            if f"zoldyq.{namespace}" in entry.name:
                with contextlib.suppress(FileNotFoundError):  # destroyed meanwhile
                    total += entry.stat().st_blocks * 512
    return total


class Sampler:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.t0: float | None = None

    def __call__(self, run: Run) -> None:
        now = time.monotonic()
        self.t0 = self.t0 if self.t0 is not None else now
        t = round(now - self.t0, 2)
        shm = shm_bytes(run.env["LOAD_NS"])
        tree = server_processes(run.srv.pid)
        for role, pids in tree.items():
            for i, pid in enumerate(sorted(pids)):
                name = f"{role}{i + 1}" if role == "worker" else role
                self.rows.append({"t": t, "process": name, "pid": pid, **memory_kb(pid),
                                  "fds": fds(pid), "shm_bytes": shm})


def flat(rows: list[dict[str, Any]], warmup: float) -> list[str]:
    """Problems with the samples after ``warmup`` seconds; [] when they are flat.

    The samples after warm-up are cut in thirds and the median of the last third is
    compared with the median of the first (medians: one sample caught mid-request
    does not count). Allowed growth, per process:

    - private memory (RssAnon): 3 MiB + 5 %. CPython's allocator takes memory in
      256 KiB pools and 1 MiB arenas, glibc in per-thread arenas, and caches fill
      (interned strings, the engine's queue handles); these steps come once, early
      or late, and do not repeat. A leak of a few hundred bytes per request grows a worker by more
      than that within a minute at the soak's rate; smaller ones show in the long
      run's plot, not in a 30 s test.
    - open file descriptors: 2 (a client reconnecting may hold one more for a moment;
      a leak grows without bound).
    - /dev/shm: none. A ring is backed 1 MiB at a time as its write position first
      reaches it, up to the queue's max_bytes (the soak's rings are small enough to
      be fully backed during warm-up); a queue or a ring never freed would show here.
    """
    problems = []
    by_process: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["t"] >= warmup:
            by_process.setdefault(r["process"], []).append(r)
    for name, samples in sorted(by_process.items()):
        third = len(samples) // 3
        if third < 2:
            problems.append(f"{name}: only {len(samples)} samples after warm-up")
            continue
        first, last = samples[:third], samples[-third:]
        if {r["pid"] for r in samples} != {samples[0]["pid"]}:
            problems.append(f"{name}: restarted during the soak")
        a, b = (statistics.median(r["private_kb"] for r in s) for s in (first, last))
        if b - a > RSS_SLACK_KB + RSS_SLACK_FRACTION * a:
            problems.append(f"{name}: private memory grew from {a / 1024:.1f} to "
                            f"{b / 1024:.1f} MiB")
        a, b = (statistics.median(r["fds"] for r in s) for s in (first, last))
        if b - a > FD_SLACK:
            problems.append(f"{name}: open fds grew from {a:g} to {b:g}")
    shm = {r["t"]: r["shm_bytes"] for r in rows if r["t"] >= warmup}
    values = [shm[t] for t in sorted(shm)]
    third = len(values) // 3
    if third and statistics.median(values[-third:]) > statistics.median(values[:third]):
        problems.append(f"/dev/shm grew from {statistics.median(values[:third])} to "
                        f"{statistics.median(values[-third:])} bytes")
    return problems


def summary(rows: list[dict[str, Any]], warmup: float) -> str:
    lines = [f"{'process':10} {'private MiB at warm-up -> end':>30} {'fds':>10}"]
    names = sorted({r["process"] for r in rows})
    for name in names:
        s = [r for r in rows if r["process"] == name and r["t"] >= warmup]
        if s:
            a, b = s[0]["private_kb"] / 1024, s[-1]["private_kb"] / 1024
            lines.append(f"{name:10} {a:16.1f} -> {b:9.1f} {s[0]['fds']:>5} -> {s[-1]['fds']}")
    shm = [r["shm_bytes"] for r in rows if r["t"] >= warmup]
    if shm:
        lines.append(f"/dev/shm   {shm[0] / 2**20:12.1f} -> {shm[-1] / 2**20:9.1f} MiB")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: str, warmup: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_fd, ax_shm) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    for name in sorted({r["process"] for r in rows}):
        s = [r for r in rows if r["process"] == name]
        line, = ax_rss.plot([r["t"] for r in s], [r["private_kb"] / 1024 for r in s],
                            label=name)
        ax_rss.plot([r["t"] for r in s], [r["rss_kb"] / 1024 for r in s], linestyle="--",
                    linewidth=0.8, color=line.get_color())
        ax_fd.plot([r["t"] for r in s], [r["fds"] for r in s], label=name)
    shm = sorted({r["t"]: r["shm_bytes"] for r in rows}.items())
    ax_shm.plot([t for t, _ in shm], [b / 2**20 for _, b in shm], color="black")
    ax_rss.set_ylabel("MiB: private (RssAnon),\n-- with shared pages (VmRSS)")
    ax_fd.set_ylabel("open fds")
    ax_shm.set_ylabel("/dev/shm (MiB)")
    ax_shm.set_xlabel("seconds")
    for ax in (ax_rss, ax_fd, ax_shm):
        ax.axvline(warmup, color="grey", linestyle=":", linewidth=1)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    ax_rss.legend(fontsize="small", ncol=3)
    ax_rss.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def soak(seconds: float, rate: float, workers: int, warmup: float, queue_max_bytes: int,
         time_limit: float = 1.0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``time_limit``: the longest client stall that passes (chaos's; 1 s for idle runs)."""
    sampler = Sampler()
    report = chaos(seconds, seed=0, kill_interval=0, workers=workers, rate=rate,
                   on_tick=sampler, kills=False, queue_max_bytes=queue_max_bytes,
                   time_limit=time_limit)
    report["failures"] += flat(sampler.rows, warmup)
    return report, sampler.rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--rate", type=float, default=150, help="operations/s per producer")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--warmup", type=float, help="seconds (default: a fifth, at least 5)")
    parser.add_argument("--queue-max-bytes", type=int, default=1 << 20)
    parser.add_argument("--csv", default="soak.csv")
    parser.add_argument("--png", help="plot to this file (needs matplotlib)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up like on Ctrl-C
    warmup = args.warmup if args.warmup is not None else max(5.0, args.seconds / 5)
    report, rows = soak(args.seconds, args.rate, args.workers, warmup, args.queue_max_bytes)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    if args.png:
        plot(rows, args.png, warmup, f"soak: {args.seconds:g} s, {report['acknowledged']} "
             f"messages over HTTP, WebSocket and the local API")
    print(summary(rows, warmup))
    print(render(report))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
