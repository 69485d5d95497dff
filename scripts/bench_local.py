#!/usr/bin/env python3
"""Local API throughput and latency, interleaved in rounds with the usual Python alternatives.

    .venv/bin/python scripts/bench_local.py [--rounds 5] [--quick] [--markdown] [--json FILE]
                                            [--redis] [--lease-only]

Backends: ZoldyQ on its C path, ZoldyQ on its pure-Python path (``ZOLDYQ_PURE_PYTHON``'s
engine), faster-fifo and multiprocessing.Queue; with ``--redis`` also ZoldyQ on Redis and
plain Redis lists (RPUSH/LPOP, BLPOP to wait) through redis-py, each on a throwaway
``redis-server`` (persistence off), with 1/20 of the messages (each call is a round trip).
Workloads, 100-byte messages, separate processes: 1 producer -> 1 consumer one message per
call (streaming); one consumer draining a pre-filled queue one message per call (drain); 4
producers -> 4 consumers; 1 -> 1 in batches of 100 (``put_records``/``get_many``;
multiprocessing.Queue pickles a list of 100 as one message, its usual batching); the
one-way latency of a hand-off to a consumer parked on an empty queue (p50/p99).

Every round runs every workload on every backend, the backends in a rotating order, so
that other load on this shared host hits them alike. Figures are medians over rounds with
their spread (min-max); each ratio is the median of the per-round ratios of runs made
seconds apart.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import queue as std_queue
import statistics
import sys
import time
from typing import Any

import zoldyq
import zoldyq.redis
from zoldyq.shm import speedups
from zoldyq.shm.layout import KIND_BYTES

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from tests.helpers import redis_server

PAYLOAD = b"x" * 100
BATCH = 100
ctx = mp.get_context("fork")


# -- backends ------------------------------------------------------------------------------


class Zoldyq:
    name = "zoldyq (C)"
    c_path = True
    scale = 1  # messages per workload are divided by this

    def __init__(self) -> None:
        if self.c_path and not speedups.ENABLED:
            raise SystemExit("zoldyq.shm._speedups is not built: pip install -e . with a compiler")
        self.ns = f"bench{os.getpid()}{'c' if self.c_path else 'p'}"
        self.broker = zoldyq.create(self.ns, max_messages=400_000, max_bytes=128 << 20)
        self.broker.create_queue("b", max_messages=400_000, max_bytes=128 << 20)

    def handle(self) -> Any:
        """A handle on this path: the path is chosen when the shared queue is opened."""
        saved, speedups.ENABLED = speedups.ENABLED, self.c_path
        try:
            q = zoldyq.attach(self.ns).queue("b")
            q._resolve(create=False)
            assert (q._sq.fast is not None) == self.c_path  # type: ignore[union-attr]
            return q
        finally:
            speedups.ENABLED = saved

    @staticmethod
    def put(q: Any, data: bytes) -> bool:
        try:
            q.put_bytes(data)
            return True
        except zoldyq.QueueFull:
            return False

    @staticmethod
    def put_batch(q: Any, items: list[bytes]) -> bool:
        try:
            q.put_records([(KIND_BYTES, d) for d in items])
            return True
        except zoldyq.QueueFull:
            return False

    @staticmethod
    def get(q: Any) -> bytes | None:
        m = q.get(timeout=0.5)
        return None if m is None else m.data

    @staticmethod
    def get_batch(q: Any) -> list[bytes]:
        return [m.data for m in q.get_many(BATCH, timeout=0.5)]

    def empty(self) -> None:
        self.broker.queue("b").clear()

    def close(self) -> None:
        self.broker.close()
        zoldyq.destroy(self.ns)


class ZoldyqPure(Zoldyq):
    name = "zoldyq (pure Python)"
    c_path = False


class FasterFifo:
    name = "faster-fifo"

    def __init__(self) -> None:
        from faster_fifo import Queue

        self.q = Queue(max_size_bytes=128 << 20)

    def handle(self) -> Any:
        return self.q

    @staticmethod
    def put(q: Any, data: bytes) -> bool:
        try:
            q.put(data, timeout=0.5)
            return True
        except std_queue.Full:
            return False

    @staticmethod
    def put_batch(q: Any, items: list[bytes]) -> bool:
        try:
            q.put_many(items, timeout=0.5)
            return True
        except std_queue.Full:
            return False

    @staticmethod
    def get(q: Any) -> bytes | None:
        try:
            return q.get(timeout=0.5)
        except std_queue.Empty:
            return None

    @staticmethod
    def get_batch(q: Any) -> list[bytes]:
        try:
            return q.get_many(max_messages_to_get=BATCH, timeout=0.5)
        except std_queue.Empty:
            return []

    def empty(self) -> None:
        while self.get_batch(self.q):
            pass

    def close(self) -> None:
        pass


class MpQueue:
    name = "multiprocessing.Queue"

    def __init__(self) -> None:
        self.q = ctx.Queue(maxsize=400_000)

    def handle(self) -> Any:
        return self.q

    @staticmethod
    def put(q: Any, data: bytes) -> bool:
        q.put(data)
        return True

    @staticmethod
    def put_batch(q: Any, items: list[bytes]) -> bool:
        q.put(items)  # a list pickled as one message: the usual way to batch it
        return True

    @staticmethod
    def get(q: Any) -> bytes | None:
        try:
            return q.get(timeout=0.5)
        except std_queue.Empty:
            return None

    @staticmethod
    def get_batch(q: Any) -> list[bytes]:
        try:
            return q.get(timeout=0.5)
        except std_queue.Empty:
            return []

    def empty(self) -> None:
        pass

    def close(self) -> None:
        self.q.close()


class ZoldyqRedis(Zoldyq):
    name = "zoldyq on Redis"
    scale = 20

    def __init__(self) -> None:
        self.server = redis_server.RedisServer()
        self.ns = f"bench{os.getpid()}r"
        self.broker = zoldyq.redis.connect(self.server.url, self.ns, max_messages=400_000,
                                           max_bytes=128 << 20)
        self.broker.create_queue("b", max_messages=400_000, max_bytes=128 << 20)

    def handle(self) -> Any:
        """Its own Broker in each process (connections are not shared across a fork)."""
        return zoldyq.redis.connect(self.server.url, self.ns).queue("b")

    def close(self) -> None:
        self.broker.close()
        self.server.close()


class RedisLists:
    name = "Redis lists (redis-py)"
    scale = 20

    def __init__(self) -> None:
        self.server = redis_server.RedisServer()

    def handle(self) -> Any:
        import redis

        return redis.Redis.from_url(self.server.url)

    @staticmethod
    def put(q: Any, data: bytes) -> bool:
        q.rpush("b", data)
        return True

    @staticmethod
    def put_batch(q: Any, items: list[bytes]) -> bool:
        q.rpush("b", *items)
        return True

    @staticmethod
    def get(q: Any) -> bytes | None:
        got = q.blpop(["b"], timeout=0.5)
        return None if got is None else got[1]  # type: ignore[no-any-return]

    @staticmethod
    def get_batch(q: Any) -> list[bytes]:
        got = q.lpop("b", BATCH)
        if got:
            return got  # type: ignore[no-any-return]
        first = q.blpop(["b"], timeout=0.5)
        return [] if first is None else [first[1]]

    def empty(self) -> None:
        self.handle().delete("b")

    def close(self) -> None:
        self.server.close()


BACKENDS: list[Any] = [Zoldyq, ZoldyqPure, FasterFifo, MpQueue]
REDIS_BACKENDS: list[Any] = [ZoldyqRedis, RedisLists]


# -- workloads -----------------------------------------------------------------------------


def _producer(backend: Any, n: int, batch: bool, start: Any) -> None:
    q = backend.handle()
    start.wait()
    if batch:
        items = [PAYLOAD] * BATCH
        for _ in range(n // BATCH):
            while not backend.put_batch(q, items):
                time.sleep(0)
    else:
        put = backend.put
        for _ in range(n):
            while not put(q, PAYLOAD):
                time.sleep(0)


def _consumer(backend: Any, n: int, batch: bool, start: Any, done: Any) -> None:
    q = backend.handle()
    start.wait()
    got = 0
    if batch:
        while got < n:
            got += len(backend.get_batch(q))
    else:
        get = backend.get
        while got < n:
            if get(q) is not None:
                got += 1
    done.put(time.perf_counter())


def throughput(backend: Any, n: int, batch: bool, pairs: int = 1, prefill: bool = False) -> float:
    """Messages per second from ``pairs`` producers to ``pairs`` consumers; with
    ``prefill``, one consumer draining ``n`` messages put there beforehand."""
    start, done = ctx.Event(), ctx.Queue()
    each = n // pairs
    procs = []
    if prefill:
        q = backend.handle()
        for _ in range(n):
            while not backend.put(q, PAYLOAD):
                time.sleep(0)
    else:
        procs += [ctx.Process(target=_producer, args=(backend, each, batch, start))
                  for _ in range(pairs)]
    procs += [ctx.Process(target=_consumer, args=(backend, each, batch, start, done))
              for _ in range(pairs)]
    for p in procs:
        p.start()
    time.sleep(0.3)  # every process attached and waiting
    t0 = time.perf_counter()
    start.set()
    ends = [done.get(timeout=300) for _ in range(pairs)]
    for p in procs:
        p.join(60)
    return each * pairs / (max(ends) - t0)


def _latency_consumer(backend: Any, n: int, start: Any, out: Any) -> None:
    q = backend.handle()
    get = backend.get
    start.wait()
    samples = []
    while len(samples) < n:
        data = get(q)
        if data is not None:
            samples.append(time.monotonic_ns() - int.from_bytes(data[:8], "little"))
    out.put(samples)


def latency(backend: Any, n: int) -> tuple[float, float]:
    """One-way hand-off latency (µs), p50 and p99, to a consumer parked on an empty queue."""
    start, out = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_latency_consumer, args=(backend, n, start, out))
    consumer.start()
    q = backend.handle()
    time.sleep(0.3)
    start.set()
    time.sleep(0.1)
    for _ in range(n):
        time.sleep(0.001)  # let the consumer park (zoldyq watches the ring for 50 µs first)
        backend.put(q, time.monotonic_ns().to_bytes(8, "little") + PAYLOAD[8:])
    samples = out.get(timeout=120)
    consumer.join(30)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


# -- rounds and report ---------------------------------------------------------------------

#: (key, column title, higher is better)
METRICS = [
    ("stream", "1→1 streaming msg/s", True),
    ("drain", "drain msg/s", True),
    ("4x4", "4→4 msg/s", True),
    ("batch", "batch-100 msg/s", True),
    ("p50", "hand-off p50 µs", False),
    ("p99", "hand-off p99 µs", False),
]


def measure(backend: Any, sizes: dict[str, int]) -> dict[str, float]:
    sizes = {k: max(100, v // getattr(backend, "scale", 1)) for k, v in sizes.items()}
    r: dict[str, float] = {}
    r["stream"] = throughput(backend, sizes["single"], batch=False)
    backend.empty()
    r["drain"] = throughput(backend, sizes["single"], batch=False, prefill=True)
    backend.empty()
    r["4x4"] = throughput(backend, sizes["single"], batch=False, pairs=4)
    backend.empty()
    r["batch"] = throughput(backend, sizes["batch"], batch=True)
    backend.empty()
    r["p50"], r["p99"] = latency(backend, sizes["latency"])
    return r


def run(rounds: int, quick: bool, with_redis: bool = False) -> dict[str, list[dict[str, float]]]:
    sizes = {"single": 100_000, "batch": 1_000_000, "latency": 1_000}
    if quick:
        sizes = {"single": 30_000, "batch": 300_000, "latency": 300}
    with contextlib.ExitStack() as stack:  # one that fails to start closes those before it
        backends = []
        for make in BACKENDS + (REDIS_BACKENDS if with_redis else []):
            backends.append(make())
            stack.callback(backends[-1].close)
        runs: dict[str, list[dict[str, float]]] = {b.name: [] for b in backends}
        for i in range(rounds):
            order = backends[i % len(backends):] + backends[: i % len(backends)]
            for b in order:
                runs[b.name].append(measure(b, sizes))
            print(f"  round {i + 1}/{rounds} done", file=sys.stderr)
    return runs


def _fmt(v: float, key: str) -> str:
    return f"{v:.1f}" if key in ("p50", "p99") else f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v:,.0f}"


def table(runs: dict[str, list[dict[str, float]]]) -> str:
    """Markdown: median (min-max) per backend, then the per-round ratios of the C path."""
    lines = ["| backend | " + " | ".join(t for _, t, _ in METRICS) + " |",
             "| --- |" + " ---: |" * len(METRICS)]
    for name, rs in runs.items():
        cells = []
        for key, _, _ in METRICS:
            vals = [r[key] for r in rs]
            cells.append(f"{_fmt(statistics.median(vals), key)} "
                         f"({_fmt(min(vals), key)}-{_fmt(max(vals), key)})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    pairs = [("C", Zoldyq.name, other) for other in (FasterFifo.name, MpQueue.name,
                                                       ZoldyqPure.name)]
    if RedisLists.name in runs:
        pairs.append(("on Redis", ZoldyqRedis.name, RedisLists.name))
    for label, ours, other in pairs:
        cells = []
        for key, _, higher in METRICS:
            ratios = [(a[key] / b[key]) if higher else (b[key] / a[key])
                      for a, b in zip(runs[ours], runs[other], strict=True)]
            cells.append(f"{statistics.median(ratios):.2f}x "
                         f"({min(ratios):.2f}-{max(ratios):.2f})")
        lines.append(f"| {label} ÷ {other} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def lease_rows(n: int, rounds: int) -> dict[str, list[float]]:
    """Consumer-side throughput from a full queue, one process: plain get against
    lease + ack, one message per call and batches of 100 (``ack_many``); every round runs
    every row, in alternating order, so the ratios compare runs made seconds apart."""
    ns = f"benchl{os.getpid()}"
    broker = zoldyq.create(ns, max_messages=n + 1, max_bytes=64 << 20)
    q = broker.queue("l")
    rows = (
        ("get", lambda: q.get()),
        ("lease+ack", lambda: q.get(lease=30).ack()),  # type: ignore[union-attr]
        ("get_many(100)", lambda: q.get_many(BATCH)),
        ("lease+ack_many(100)", lambda: q.ack_many(
            [m.lease_id for m in q.get_many(BATCH, lease=30)])),  # type: ignore[misc]
    )
    out: dict[str, list[float]] = {name: [] for name, _ in rows}
    try:
        for i in range(rounds):
            for name, drain in rows if i % 2 == 0 else rows[::-1]:
                for chunk in range(0, n, 1000):
                    q.put_records([(KIND_BYTES, PAYLOAD)] * min(1000, n - chunk))
                calls = n if "100" not in name else n // BATCH
                t0 = time.perf_counter()
                for _ in range(calls):
                    drain()
                out[name].append(n / (time.perf_counter() - t0))
                q.clear()
    finally:
        broker.close()
        zoldyq.destroy(ns)
    return out


def print_lease_rows(runs: dict[str, list[float]]) -> None:
    rounds = len(runs["get"])
    print(f"\n{'reliable delivery (1 process)':<32}{'msg/s':>12}  vs plain, "
          f"medians of {rounds} interleaved rounds (min-max)")
    for name, plain in (("get", "get"), ("lease+ack", "get"), ("get_many(100)", "get_many(100)"),
                        ("lease+ack_many(100)", "get_many(100)")):
        ratios = [a / b for a, b in zip(runs[name], runs[plain], strict=True)]
        print(f"{name:<32}{statistics.median(runs[name]):>12,.0f}  "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="smaller counts")
    parser.add_argument("--markdown", action="store_true", help="print only the table")
    parser.add_argument("--json", help="also write the raw runs to this file")
    parser.add_argument("--redis", action="store_true",
                        help="also ZoldyQ on Redis and plain Redis lists (needs redis-server)")
    parser.add_argument("--lease-only", action="store_true",
                        help="only the reliable-delivery rows (lease + ack against plain get)")
    args = parser.parse_args()
    lease_n = 30_000 if args.quick else 100_000
    if args.lease_only:
        print_lease_rows(lease_rows(lease_n, args.rounds))
        return 0
    runs = run(args.rounds, args.quick, args.redis)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    if not args.markdown:
        print(f"\n100-byte messages, medians of {args.rounds} interleaved rounds (min-max); "
              "ratios are medians of per-round ratios, latency ratios are baseline ÷ zoldyq "
              "(above 1: zoldyq is faster)\n")
    print(table(runs))
    if not args.markdown:
        print_lease_rows(lease_rows(lease_n, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
