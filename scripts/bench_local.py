#!/usr/bin/env python3
"""Local API throughput and latency, side by side with the usual Python alternatives.

    .venv/bin/python scripts/bench_local.py [--quick]

Runs in one go, on the same machine, for each backend (ZoldyQ, multiprocessing.Queue,
faster-fifo): 1 producer process -> 1 consumer process with 100-byte messages, one
message per call and batches of 100; the one-way latency of a hand-off to a parked
consumer (p50/p99); and 4 producers -> 4 consumers. Prints a table with ZoldyQ's ratio
to each baseline. Machines here are shared and noisy: compare ratios, not absolutes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue as std_queue
import sys
import time
from collections.abc import Callable
from typing import Any

import zoldyq
from zoldyq.shm.layout import KIND_BYTES

PAYLOAD = b"x" * 100
BATCH = 100
ctx = mp.get_context("fork")


# -- backends: each gives (make, put_one, put_batch, get_one, get_batch) -------------------


class Zoldyq:
    name = "zoldyq"

    def __init__(self) -> None:
        self.ns = f"bench{os.getpid()}"
        self.broker = zoldyq.create(self.ns, max_messages=200_000, max_bytes=64 << 20)
        self.broker.create_queue("b", max_messages=200_000, max_bytes=64 << 20)

    def handle(self) -> Any:
        return zoldyq.attach(self.ns).queue("b")

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

    @staticmethod
    def poll(q: Any) -> bytes | None:
        m = q.get()
        return None if m is None else m.data

    def close(self) -> None:
        self.broker.close()
        zoldyq.destroy(self.ns)


class MpQueue:
    name = "multiprocessing.Queue"

    def __init__(self) -> None:
        self.q = ctx.Queue(maxsize=200_000)

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

    @staticmethod
    def poll(q: Any) -> bytes | None:
        try:
            return q.get_nowait()
        except std_queue.Empty:
            return None

    def close(self) -> None:
        self.q.close()


class FasterFifo:
    name = "faster-fifo"

    def __init__(self) -> None:
        from faster_fifo import Queue

        self.q = Queue(max_size_bytes=64 << 20)

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

    @staticmethod
    def poll(q: Any) -> bytes | None:
        try:
            return q.get(block=False)
        except std_queue.Empty:
            return None

    def close(self) -> None:
        pass


# -- workloads ---------------------------------------------------------------------------


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


def throughput(backend: Any, n: int, batch: bool, pairs: int = 1) -> float:
    """Messages per second from ``pairs`` producers to ``pairs`` consumers."""
    start, done = ctx.Event(), ctx.Queue()
    each = n // pairs
    procs = [ctx.Process(target=_producer, args=(backend, each, batch, start))
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


def _latency_consumer(backend: Any, n: int, busy: bool, start: Any, out: Any) -> None:
    q = backend.handle()
    get = backend.poll if busy else backend.get
    start.wait()
    samples = []
    while len(samples) < n:
        data = get(q)
        if data is not None:
            samples.append(time.monotonic_ns() - int.from_bytes(data[:8], "little"))
    out.put(samples)


def latency(backend: Any, n: int, busy: bool = False) -> tuple[float, float]:
    """One-way hand-off latency (µs), p50 and p99, to a consumer parked on an empty
    queue, or (``busy``) to one polling it without blocking: the hand-off itself,
    without the kernel's wake-up."""
    start, out = ctx.Event(), ctx.Queue()
    consumer = ctx.Process(target=_latency_consumer, args=(backend, n, busy, start, out))
    consumer.start()
    q = backend.handle()
    time.sleep(0.3)
    start.set()
    time.sleep(0.1)
    for _ in range(n):
        time.sleep(0.0005)  # let the consumer park
        backend.put(q, time.monotonic_ns().to_bytes(8, "little") + PAYLOAD[8:])
    samples = out.get(timeout=120)
    consumer.join(30)
    samples.sort()
    return samples[len(samples) // 2] / 1000, samples[int(len(samples) * 0.99)] / 1000


def run(quick: bool) -> None:
    n_single = 100_000 if quick else 300_000
    n_batch = 500_000 if quick else 2_000_000
    n_lat = 2_000 if quick else 5_000
    backends: list[Callable[[], Any]] = [Zoldyq, MpQueue, FasterFifo]
    rows: dict[str, dict[str, float]] = {}
    for make in backends:
        b = make()
        try:
            r = rows[b.name] = {}
            r["single"] = throughput(b, n_single, batch=False)
            r["batch"] = throughput(b, n_batch, batch=True)
            r["p50"], r["p99"] = latency(b, n_lat)
            r["busy50"], _ = latency(b, n_lat, busy=True)
            r["4x4"] = throughput(b, n_single, batch=False, pairs=4)
        finally:
            b.close()
        print(f"  measured {b.name}", file=sys.stderr)
    print_table(rows)
    print_lease_rows(lease_rows(n_single // 2))


def print_table(rows: dict[str, dict[str, float]]) -> None:
    z = rows["zoldyq"]
    print(f"\n{'backend':<24}{'1->1 msg/s':>12}{'batch100 msg/s':>16}"
          f"{'p50 µs':>9}{'p99 µs':>9}{'busy p50':>10}{'4->4 msg/s':>12}")
    for name, r in rows.items():
        print(f"{name:<24}{r['single']:>12,.0f}{r['batch']:>16,.0f}"
              f"{r['p50']:>9.1f}{r['p99']:>9.1f}{r['busy50']:>10.1f}{r['4x4']:>12,.0f}")
    for name, r in rows.items():
        if name == "zoldyq":
            continue
        print(f"{'zoldyq / ' + name:<24}{z['single'] / r['single']:>11.2f}x"
              f"{z['batch'] / r['batch']:>15.2f}x{r['p50'] / z['p50']:>8.2f}x"
              f"{r['p99'] / z['p99']:>8.2f}x{r['busy50'] / z['busy50']:>9.2f}x"
              f"{z['4x4'] / r['4x4']:>11.2f}x")
    print("(latency ratios: baseline / zoldyq, higher is better for zoldyq; 'busy': the")
    print(" consumer polls without blocking, so no kernel wake-up is in the figure)")


def lease_rows(n: int) -> dict[str, float]:
    """Consumer-side throughput from a full queue, one process: plain get against
    lease + ack, one message per call and batches of 100 (``ack_many``)."""
    ns = f"benchl{os.getpid()}"
    broker = zoldyq.create(ns, max_messages=n + 1, max_bytes=64 << 20)
    q = broker.queue("l")
    out: dict[str, float] = {}
    try:
        for name, drain in (
            ("get", lambda: q.get()),
            ("lease+ack", lambda: q.get(lease=30).ack()),  # type: ignore[union-attr]
            ("get_many(100)", lambda: q.get_many(BATCH)),
            ("lease+ack_many(100)", lambda: q.ack_many(
                [m.lease_id for m in q.get_many(BATCH, lease=30)])),  # type: ignore[misc]
        ):
            for chunk in range(0, n, 1000):
                q.put_records([(KIND_BYTES, PAYLOAD)] * min(1000, n - chunk))
            calls = n if "100" not in name else n // BATCH
            t0 = time.perf_counter()
            for _ in range(calls):
                drain()
            out[name] = n / (time.perf_counter() - t0)
            q.clear()
    finally:
        broker.close()
        zoldyq.destroy(ns)
    return out


def print_lease_rows(r: dict[str, float]) -> None:
    print(f"\n{'reliable delivery (1 process)':<32}{'msg/s':>12}{'vs plain':>10}")
    for name, plain in (("get", "get"), ("lease+ack", "get"), ("get_many(100)", "get_many(100)"),
                        ("lease+ack_many(100)", "get_many(100)")):
        print(f"{name:<32}{r[name]:>12,.0f}{r[name] / r[plain]:>9.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (~1 minute)")
    run(parser.parse_args().quick)
