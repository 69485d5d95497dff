"""``zoldyq bench``: enqueue N messages, then dequeue them, timing every call.

One client, one thread: it measures what a single producer or consumer
sees (latency per call and its throughput), locally or through a server.
Load from many clients belongs in ``scripts/``.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, TextIO

from zoldyq.cli.target import Target
from zoldyq.cli.term import Progress
from zoldyq.errors import ZoldyQError


def _percentile(sorted_us: list[float], p: float) -> float:
    if not sorted_us:
        return 0.0
    return sorted_us[min(len(sorted_us) - 1, int(p * len(sorted_us)))]


def _summary(phase: str, count: int, seconds: float, lat_us: list[float]) -> dict[str, Any]:
    lat_us.sort()
    return {
        "phase": phase,
        "messages": count,
        "calls": len(lat_us),
        "seconds": round(seconds, 4),
        "msgs_per_s": round(count / seconds, 1) if seconds > 0 else 0.0,
        "p50_us": round(_percentile(lat_us, 0.50), 1),
        "p99_us": round(_percentile(lat_us, 0.99), 1),
        "max_us": round(lat_us[-1], 1) if lat_us else 0.0,
    }


def run(
    client: Target,
    messages: int,
    size: int,
    batch: int,
    queue: str | None,
    keep: bool,
    stream: TextIO,
    progress: bool,
) -> list[dict[str, Any]]:
    """Run both phases on ``queue`` (default: a fresh ``bench-<pid>``); one summary each."""
    name = queue or f"bench-{os.getpid()}"
    payload = {"bench": "x" * max(size - 13, 0)}  # ~``size`` bytes of JSON
    perf = time.perf_counter
    results = []
    try:
        bar = Progress(messages, "enqueue", stream, progress)
        lat: list[float] = []
        start = perf()
        sent = 0
        while sent < messages:
            n = min(batch, messages - sent)
            t0 = perf()
            if n == 1:
                client.put(name, payload)
            else:
                client.put_many(name, [payload] * n)
            lat.append((perf() - t0) * 1e6)
            sent += n
            bar.advance(n)
        results.append(_summary("enqueue", sent, perf() - start, lat))
        bar.finish()

        bar = Progress(messages, "dequeue", stream, progress)
        lat = []
        start = perf()
        got = 0
        while got < messages:
            t0 = perf()
            n = len(client.get(name, timeout=1.0, max=min(batch, messages - got)))
            lat.append((perf() - t0) * 1e6)
            if not n:
                break  # somebody else took them: report what we got
            got += n
            bar.advance(n)
        results.append(_summary("dequeue", got, perf() - start, lat))
        bar.finish()
    finally:
        if not keep and queue is None:
            with contextlib.suppress(ZoldyQError):  # the error that matters is above
                client.delete(name)
    return results
