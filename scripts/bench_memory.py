#!/usr/bin/env python3
"""Memory per queued message: ZoldyQ's shared-memory engine against Redis, in one run.

    .venv/bin/python scripts/bench_memory.py [--rounds 5] [--messages 100000] [--markdown]

Each round queues ``--messages`` 100-byte messages (distinct payloads, put in batches of
1,000, nobody consuming) on every backend, the backends in a rotating order, and
divides what the memory grew by the message count:

- ZoldyQ on shm, ring bytes: the queue's ``bytes`` stat (ring bytes between head and
  tail: record headers, payloads, padding) per message.
- ZoldyQ on shm, /dev/shm blocks: the namespace's files' ``st_blocks * 512`` before and
  after, what tmpfs really holds (the ring is backed ahead of the tail in steps).
- Redis lists: ``INFO memory`` ``used_memory`` before and after ``RPUSH`` of the same
  payloads on a throwaway ``redis-server`` (persistence off), what a plain Redis list
  costs.
- ZoldyQ on Redis: the same ``used_memory`` delta for ZoldyQ's own Redis engine, which
  keeps what the shm engine keeps per message (payload, kind, enqueued_at) and more
  (sequence number, delivery count).

Figures are medians over the rounds with their spread (min-max); the ratio to Redis
lists is the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
from collections.abc import Callable

import zoldyq
import zoldyq.redis
from zoldyq.shm.layout import KIND_BYTES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.helpers import redis_server

SIZE = 100
BATCH = 1_000
SHM_RING = "zoldyq on shm: ring bytes"
SHM_BLOCKS = "zoldyq on shm: /dev/shm blocks"
REDIS_LISTS = "Redis lists (RPUSH): used_memory"
ZQ_REDIS = "zoldyq on Redis: used_memory"
ROWS = (SHM_RING, SHM_BLOCKS, REDIS_LISTS, ZQ_REDIS)


def payloads(n: int) -> list[bytes]:
    """Distinct 100-byte payloads (no two alike, nothing a store could share)."""
    return [b"%012d" % i + b"x" * (SIZE - 12) for i in range(n)]


def batches(items: list[bytes]) -> list[list[bytes]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def shm_blocks(ns: str) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in glob.glob(f"/dev/shm/zoldyq.{ns}*"))


def shm(items: list[bytes], rnd: int) -> dict[str, float]:
    n = len(items)
    ns = f"benchmem{os.getpid()}x{rnd}"
    cap = max(1 << 20, n * 4 * SIZE)
    broker = zoldyq.create(ns, max_messages=n, max_bytes=cap)
    try:
        q = broker.create_queue("m", max_messages=n, max_bytes=cap)
        before = shm_blocks(ns)
        for chunk in batches(items):
            q.put_records([(KIND_BYTES, d) for d in chunk])
        stats = q.stats()
        assert stats["size"] == n, stats
        return {SHM_RING: stats["bytes"] / n, SHM_BLOCKS: (shm_blocks(ns) - before) / n}
    finally:
        broker.close()
        zoldyq.destroy(ns)


def used_memory(server: redis_server.RedisServer) -> int:
    import redis

    with redis.Redis.from_url(server.url) as r:
        return int(r.info("memory")["used_memory"])


def redis_lists(items: list[bytes], rnd: int) -> dict[str, float]:
    import redis

    with redis_server.start() as server, redis.Redis.from_url(server.url) as r:
        before = used_memory(server)
        for chunk in batches(items):
            r.rpush("m", *chunk)
        assert r.llen("m") == len(items)
        return {REDIS_LISTS: (used_memory(server) - before) / len(items)}


def zoldyq_redis(items: list[bytes], rnd: int) -> dict[str, float]:
    n = len(items)
    with redis_server.start() as server:
        broker = zoldyq.redis.connect(server.url, f"benchmem{rnd}", max_messages=n,
                                      max_bytes=n * 4 * SIZE)
        try:
            q = broker.create_queue("m", max_messages=n, max_bytes=n * 4 * SIZE)
            before = used_memory(server)
            for chunk in batches(items):
                q.put_records([(KIND_BYTES, d) for d in chunk])
            assert len(q) == n
            return {ZQ_REDIS: (used_memory(server) - before) / n}
        finally:
            broker.close()


BACKENDS: list[Callable[[list[bytes], int], dict[str, float]]] = [shm, redis_lists, zoldyq_redis]


def run(rounds: int, n: int) -> list[dict[str, float]]:
    items = payloads(n)
    runs = []
    for rnd in range(rounds):
        got: dict[str, float] = {}
        for i in range(len(BACKENDS)):
            make = BACKENDS[(rnd + i) % len(BACKENDS)]
            print(f"round {rnd + 1}/{rounds}: {make.__name__}", file=sys.stderr)
            got.update(make(items, rnd))
        runs.append(got)
    return runs


def spread(values: list[float], fmt: str, unit: str = "") -> str:
    med, lo, hi = statistics.median(values), min(values), max(values)
    return f"{med:{fmt}}{unit} ({lo:{fmt}}-{hi:{fmt}})"


def table(runs: list[dict[str, float]]) -> str:
    lines = ["| bytes per queued 100-byte message | median (min-max) | ÷ Redis lists |",
             "| --- | ---: | ---: |"]
    for row in ROWS:
        ratios = [r[row] / r[REDIS_LISTS] for r in runs]
        lines.append(f"| {row} | {spread([r[row] for r in runs], '.1f')} | "
                     f"{spread(ratios, '.2f', 'x')} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    args = parser.parse_args()
    runs = run(args.rounds, args.messages)
    if not args.markdown:
        print(f"\n{args.messages:,} queued {SIZE}-byte messages, medians of {args.rounds} "
              "interleaved rounds (min-max); the ratio is the median of per-round ratios\n")
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
