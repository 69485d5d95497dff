"""kill -9 at every step of the protocol, then at random: nothing stuck, lost or corrupt."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

import zoldyq
from tests.helpers.multiproc import check_fifo, paused, spawn
from tests.helpers.procs import read_acks, read_pairs
from zoldyq.shm import segment
from zoldyq.shm.layout import BLOCK, KIND_BYTES, SEQ_MASK, W_TAIL


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def timed(fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    result = fn(*args)
    return result, time.monotonic() - t0


def payloads(q: zoldyq.Queue) -> list[object]:
    return [m.payload for m in q.get_many(1000)]


# (op, pause point, what the queue holds after the kill, given it held ["a", "b"])
STEPS = [
    ("put", "put.locked", ["a", "b"]),
    ("put", "put.written", ["a", "b"]),  # written but never committed: invisible
    ("put", "put.committed", ["a", "b", "paused"]),  # committed: it stays
    ("get", "get.locked", ["a", "b"]),
    ("get", "get.read", ["a", "b"]),  # read but not committed: still there
    ("get", "get.committed", ["b"]),  # the dead process had taken "a": the one allowed loss
]


@pytest.mark.parametrize(("op", "point", "after"), STEPS, ids=[s[1] for s in STEPS])
def test_kill_inside_the_lock(op: str, point: str, after: list[str], namespace: str,
                              tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """A process killed at any step leaves a consistent queue that others use at once."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put_many(["a", "b"])
    kill9(paused(namespace, "q", op, point, tmp_path, procs))
    _, took = timed(q.put, "next")  # takes the put lock the dead process may have held
    got, took_get = timed(payloads, q)  # and the get lock
    assert got == [*after, "next"]
    assert took < 1.0
    assert took_get < 1.0
    stats = q.stats()
    assert stats["enqueued_total"] == 3 + after.count("paused")
    assert stats["size"] == 0
    side = q._sq.put_lock if op == "put" else q._sq.get_lock  # type: ignore[union-attr]
    assert side.repairs == 1  # every pause point is inside the lock: found dirty, repaired
    broker.close()


def test_a_put_killed_after_its_block_base_leaves_every_time_exact(
        namespace: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    """A producer killed between its block-base store and its tail store (``put.written``:
    its record is the first to end in block 1, whose base it stored) leaves every queued
    time exact: the records before, in block 0, keep their own base; the next put, on the
    other path, stores block 1's base again for its own record."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    first = q.put_records([(KIND_BYTES, bytes(BLOCK // 2 - 8))] * 2)  # to BLOCK - 8
    sq = q._sq  # type: ignore[attr-defined]
    assert sq.words[W_TAIL] & SEQ_MASK == BLOCK - 8
    kill9(paused(namespace, "q", "put", "put.written", tmp_path, procs))  # '"paused"' ends in 1
    dead_base = sq.ring.table[1]
    assert first.enqueued_at < dead_base <= time.time_ns() // 1000  # stored, not committed
    time.sleep(0.01)
    nxt = q.put_records([(KIND_BYTES, b"next, in block 1")])  # 4088 + 4 + 16
    assert sq.ring.table[1] == nxt.enqueued_at > dead_base
    got = q.get_many(10)
    assert [(m.data, m.enqueued_at) for m in got] == [
        (bytes(BLOCK // 2 - 8), first.enqueued_at)] * 2 + [(b"next, in block 1", nxt.enqueued_at)]
    assert q._sq.put_lock.repairs == 1  # type: ignore[union-attr]
    broker.close()


def test_kill_while_repairing(namespace: str, tmp_path: Path,
                              procs: list[subprocess.Popen[bytes]]) -> None:
    """A rescuer killed mid-repair leaves the lock dirty; the next holder repairs again."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put("a")
    kill9(paused(namespace, "q", "put", "put.written", tmp_path, procs))
    kill9(paused(namespace, "q", "put", "lock.repair", tmp_path, procs))
    q.put("b")
    assert payloads(q) == ["a", "b"]
    assert q._sq.put_lock.repairs == 1  # type: ignore[union-attr]
    broker.close()


@pytest.mark.parametrize(("op", "point"), [("create", "registry.creating"),
                                           ("delete", "registry.deleting")])
def test_kill_inside_the_registry(op: str, point: str, namespace: str, tmp_path: Path,
                                  procs: list[subprocess.Popen[bytes]]) -> None:
    """A half-created queue is rolled back, a half-deleted one finished; no object leaks."""
    broker = zoldyq.create(namespace, max_queues=4, max_bytes=1 << 20)
    if op == "delete":
        broker.queue("q").put(1)
    kill9(paused(namespace, "q", op, point, tmp_path, procs))
    assert broker.queues() == []  # CREATING and DELETING slots are invisible
    broker.queue("other").put(1)  # takes the registry lock: repairs
    assert broker.queues() == ["other"]
    left = segment.leftovers(f"/zoldyq.{namespace}")
    assert len(left) == 3, left  # the registry segment + one queue's ring and bell
    broker.queue("q").put(2)
    assert payloads(broker.queue("q")) == [2]
    broker.close()


@pytest.mark.slow
def test_random_kills_lose_nothing_accepted(namespace: str, tmp_path: Path,
                                            procs: list[subprocess.Popen[bytes]]) -> None:
    """kill -9 random producers and consumers for a while: no duplicate, FIFO per producer,
    every acknowledged message delivered unless a killed consumer had taken it, and no
    surviving producer ever waited a second for a lock."""
    rng = random.Random(int(os.environ.get("ZOLDYQ_CHAOS_SEED", "7")))
    batch = 20
    broker = zoldyq.create(namespace, max_messages=50_000, max_bytes=8 << 20)
    broker.create_queue("chaos", max_messages=50_000, max_bytes=8 << 20)
    stop = tmp_path / "stop"
    next_tag = 0
    producers: dict[int, subprocess.Popen[bytes]] = {}
    consumers: dict[int, subprocess.Popen[bytes]] = {}
    killed_consumers = 0

    def start_producer() -> None:
        nonlocal next_tag
        tag, next_tag = next_tag, next_tag + 1
        producers[tag] = spawn("producer", namespace, "chaos", tag, 10**6, tmp_path / f"ack{tag}")
        procs.append(producers[tag])

    def start_consumer() -> None:
        nonlocal next_tag
        tag, next_tag = next_tag, next_tag + 1
        consumers[tag] = spawn("consumer", namespace, "chaos", tmp_path / f"out{tag}", stop, batch)
        procs.append(consumers[tag])

    for _ in range(3):
        start_producer()
        start_consumer()
    time.sleep(0.5)
    end = time.monotonic() + 6
    give_up = end + 60  # a loaded box starts interpreters slowly: kills wait for them
    kills = 0
    while (time.monotonic() < end or kills < 20) and time.monotonic() < give_up:
        time.sleep(rng.uniform(0.05, 0.2))
        pool = producers if rng.random() < 0.5 else consumers
        # only a process that is at work (its file exists) is worth killing
        working = [t for t, p in pool.items() if p.poll() is None and (
            tmp_path / f"{'ack' if pool is producers else 'out'}{t}").exists()]
        if not working:
            continue
        tag = rng.choice(working)
        pool[tag].send_signal(signal.SIGKILL)
        pool[tag].wait(10)
        kills += 1
        if pool is producers:
            del producers[tag]
            start_producer()
        else:
            del consumers[tag]
            killed_consumers += 1
            start_consumer()
    for p in producers.values():
        p.send_signal(signal.SIGTERM)
        p.wait(10)
    stop.touch()
    for p in consumers.values():
        assert p.wait(60) == 0
    leftover = [m.payload for m in broker.queue("chaos").get_many(100_000)]

    streams = [read_pairs(str(tmp_path / f"out{t}")) for t in range(next_tag)]
    streams.append([tuple(p) for p in leftover])  # type: ignore[misc]
    received = Counter(pair for s in streams for pair in s)
    assert max(received.values()) == 1, "a message was delivered twice"
    check_fifo(streams)
    acks = [read_acks(str(tmp_path / f"ack{t}")) for t in range(next_tag)]
    acked = {(t, s) for t, (count, _) in enumerate(acks) for s in range(count)}
    missing = acked - set(received)
    assert len(missing) <= killed_consumers * batch, f"{len(missing)} acknowledged lost"
    longest = max(slowest for _, slowest in acks)
    assert longest < 1_000_000, f"a producer waited {longest} µs"
    assert kills >= 20
    assert len(acked) > 100  # traffic really flowed (restarts are slow on a loaded box)
    broker.close()
