"""What operations cost: request counting, a /metrics scrape, /health, a snapshot.

    .venv/bin/python scripts/bench_ops.py [--queues 100] [--messages 10000]

Each figure is printed next to the baseline measured in the same run (one
local ``put`` of a small JSON message), so the ratios survive a noisy box.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import zoldyq
from zoldyq.cli.term import table
from zoldyq.ops import health, metrics, snapshot
from zoldyq.shm.counters import Counters


def per_call(fn: Callable[[], object], n: int) -> float:
    """Best of 3 runs of ``n`` calls, in µs per call."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queues", type=int, default=100)
    ap.add_argument("--messages", type=int, default=10_000, help="messages in the snapshot")
    args = ap.parse_args()
    ns = f"zqbench{os.getpid()}"
    broker = zoldyq.create(ns, max_queues=args.queues + 1)
    try:
        q = broker.queue("base")
        put = per_call(lambda: q.put({"n": 1}), 20_000)
        q.clear()
        counters = Counters(ns)
        count = per_call(lambda: metrics.count_request(counters, "POST", "enqueue", 200), 20_000)
        for i in range(args.queues - 1):
            broker.queue(f"q{i}").put(i)
        reg = metrics.registry(broker)
        scrape = per_call(lambda: metrics.exposition(reg), 10)
        check = per_call(lambda: health.check(broker), 10)
        q.put_many([{"n": i, "pad": "x" * 80} for i in range(args.messages)])
        with tempfile.TemporaryDirectory() as d:
            save = per_call(lambda: snapshot.save(broker, d, "b"), 1)
            load = per_call(lambda: snapshot.read(d, "b"), 1)
        rows = [
            ("local put (baseline)", put, 1.0),
            ("count one HTTP request", count, count / put),
            (f"/metrics scrape, {args.queues} queues", scrape, scrape / put),
            (f"/health, {args.queues} queues", check, check / put),
            (f"snapshot save, {args.messages:,} msgs", save, save / put),
            (f"snapshot read+check, {args.messages:,} msgs", load, load / put),
        ]
        print(table([(name, round(us, 1), round(ratio, 1)) for name, us, ratio in rows],
                    ("OPERATION", "µs", "x PUT")))  # fmt: skip
        counters.close()
    finally:
        broker.close()
        zoldyq.destroy(ns)


if __name__ == "__main__":
    main()
