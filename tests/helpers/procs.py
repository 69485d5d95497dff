"""Worker processes for multi-process and crash tests: ``python -m tests.helpers.procs ROLE ...``.

Each runs in a fresh interpreter that attaches to the namespace by name, as
an unrelated process on the host would. Progress goes to small files the test
reads after the fact, written so that a ``kill -9`` at any moment leaves
them consistent: an 8-byte ``pwrite`` for counters, whole fixed-size records
appended with one ``write`` for received messages.
"""

from __future__ import annotations

import os
import struct
import sys
import time

import zoldyq

PAIR = struct.Struct("<II")  # producer tag, sequence number


def producer(ns: str, queue: str, tag: int, count: int, ack_path: str) -> None:
    """Put [tag, seq] for seq in 0..count-1, recording how many were acknowledged.

    The ack file holds (acknowledged count, longest put in µs) as two u64.
    """
    q = zoldyq.attach(ns).queue(queue)
    fd = os.open(ack_path, os.O_RDWR | os.O_CREAT, 0o600)
    longest = 0
    for seq in range(count):
        while True:
            t0 = time.monotonic()
            try:
                q.put([tag, seq])
                break
            except zoldyq.QueueFull:
                time.sleep(0.001)
        longest = max(longest, int((time.monotonic() - t0) * 1e6))
        os.pwrite(fd, struct.pack("<QQ", seq + 1, longest), 0)


def consumer(ns: str, queue: str, out_path: str, stop_path: str, batch: int) -> None:
    """Take batches and append each (tag, seq) to ``out_path`` until told to stop and idle."""
    q = zoldyq.attach(ns).queue(queue)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        msgs = q.get_many(batch, timeout=0.1)
        if msgs:
            os.write(fd, b"".join(PAIR.pack(*m.payload) for m in msgs))
        elif os.path.exists(stop_path):
            return


def leaser(ns: str, queue: str, out_path: str, stop_path: str, lease: float) -> None:
    """Lease batches, append each (tag, seq) to ``out_path``, then ack them, until told to
    stop and nothing is left, leased ones included (a killed consumer's come back when its
    lease ends); a kill between the write and the ack makes a redelivery, not a loss."""
    q = zoldyq.attach(ns).queue(queue)
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    while True:
        msgs = q.get_many(20, timeout=0.1, lease=lease)
        if msgs:
            os.write(fd, b"".join(PAIR.pack(*m.payload) for m in msgs))
            q.ack_many([m.lease_id for m in msgs if m.lease_id])
        elif os.path.exists(stop_path) and not any(map(q.stats().get, ("size", "inflight"))):
            return


def do(ns: str, queue: str, op: str, arg: str = "") -> None:
    """One operation, for the pause-point tests (the environment picks the pause)."""
    b = zoldyq.attach(ns)
    q = b.queue(queue)
    if op == "lease":
        q.get(lease=float(arg or 30))
    elif op == "ack":
        q.ack(arg)
    elif op == "nack":
        q.nack(arg)
    elif op == "delay":
        q.put_many(["x", "y"], delay=0.2)
    elif op == "requeue":
        q.requeue(q.get_many(2))
    elif op == "redrive":
        q.redrive()
    elif op == "put":
        b.queue(queue).put("paused")
    elif op == "get":
        b.queue(queue).get()
    elif op == "clear":
        b.queue(queue).clear()
    elif op == "create":
        b.create_queue(queue)
    elif op == "delete":
        b.delete(queue)
    elif op == "destroy":
        b.close()
        zoldyq.destroy(ns)
    else:
        raise SystemExit(f"unknown op {op}")


def read_pairs(path: str) -> list[tuple[int, int]]:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    usable = len(data) - len(data) % PAIR.size
    return [PAIR.unpack_from(data, i) for i in range(0, usable, PAIR.size)]


def read_acks(path: str) -> tuple[int, int]:
    try:
        with open(path, "rb") as f:
            data = f.read(16)
    except FileNotFoundError:
        return 0, 0
    return struct.unpack("<QQ", data) if len(data) == 16 else (0, 0)


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    if role == "producer":
        producer(args[0], args[1], int(args[2]), int(args[3]), args[4])
    elif role == "consumer":
        consumer(args[0], args[1], args[2], args[3], int(args[4]))
    elif role == "leaser":
        leaser(args[0], args[1], args[2], args[3], float(args[4]))
    elif role == "do":
        do(*args)
    else:
        raise SystemExit(f"unknown role {role}")
