"""kill -9 at every step of lease, ack, nack, delay, requeue, dead-letter and redrive."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

import zoldyq
from tests.helpers.multiproc import paused

Procs = list[subprocess.Popen[bytes]]


def kill9(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


def everything(q: zoldyq.Queue, wait: float = 0.0) -> list[object]:
    """Every message the queue will hand out within ``wait`` s, acked as taken."""
    out: list[object] = []
    deadline = time.monotonic() + wait
    while True:
        got = q.get_many(100, timeout=max(0.0, min(0.2, deadline - time.monotonic())))
        out += [m.payload for m in got]
        if not got and time.monotonic() >= deadline:
            return out


# (pause point, what the queue hands out after the kill, given ["a", "b"], lease 2 s)
LEASE_STEPS = [
    ("get.locked", ["a", "b"]),
    ("lease.written", ["a", "b"]),  # slots written PENDING, head not moved: still in the ring
    ("lease.committed", ["b", "a"]),  # taken: leased by the dead process, back at expiry
]


@pytest.mark.parametrize(("point", "after"), LEASE_STEPS, ids=[s[0] for s in LEASE_STEPS])
def test_kill_inside_a_lease(point: str, after: list[str], namespace: str, tmp_path: Path,
                             procs: Procs) -> None:
    """A consumer killed at any step of a lease: each message is in exactly one place and
    the dead consumer's lease comes back when it expires."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put_many(["a", "b"])
    kill9(paused(namespace, "q", "lease", point, tmp_path, procs, "2"))
    first = everything(q)
    stats = q.stats()
    assert stats["inflight"] == (1 if point == "lease.committed" else 0)
    assert q._sq is not None
    assert q._sq.get_lock.repairs == 1
    assert first + everything(q, wait=3) == after
    broker.close()


@pytest.mark.parametrize("op", ["ack", "nack"])
def test_kill_before_ack_or_nack(op: str, namespace: str, tmp_path: Path, procs: Procs) -> None:
    """An ack or nack that dies inside the lock leaves the lease as it was (held, then expiring)."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put("a")
    m = q.get(lease=5)  # time for the child to start, on a loaded machine
    assert m is not None
    assert m.lease_id is not None
    kill9(paused(namespace, "q", op, f"{op}.locked", tmp_path, procs, m.lease_id))
    assert q.stats()["inflight"] == 1
    assert everything(q, wait=6) == ["a"]
    broker.close()


@pytest.mark.parametrize(("point", "delayed"), [("delay.written", 0)])
def test_kill_inside_a_delayed_batch(point: str, delayed: int, namespace: str,
                                     tmp_path: Path, procs: Procs) -> None:
    """A delayed batch cut by kill -9 before its commit store is not there at all."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put("a")
    kill9(paused(namespace, "q", "delay", point, tmp_path, procs))
    assert everything(q, wait=0.4) == ["a"]
    assert q.stats()["delayed"] == delayed
    broker.close()


def test_kill_inside_a_requeue(namespace: str, tmp_path: Path, procs: Procs) -> None:
    """A requeue killed after its first store has put that one back at the head; the other
    was taken by the dead process (a plain get's one allowed loss)."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.queue("q")
    q.put_many(["a", "b", "c"])
    kill9(paused(namespace, "q", "requeue", "requeue.stored", tmp_path, procs))
    assert everything(q) == ["a", "c"]
    broker.close()


@pytest.mark.parametrize("point", ["move.written", "move.committed"])
def test_kill_inside_a_dead_letter_move(point: str, namespace: str, tmp_path: Path,
                                        procs: Procs) -> None:
    """A dead-letter move killed before or after its commit: the message ends up exactly
    once, in the dead-letter queue."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.create_queue("q", max_deliveries=1)
    q.put_many(["a", "b"])
    m = q.get(lease=30)
    assert m is not None
    assert m.lease_id is not None
    kill9(paused(namespace, "q", "nack", point, tmp_path, procs, m.lease_id))
    dlq = broker.queue("q.dlq")
    assert [x.payload for x in dlq.peek()] == ([] if point == "move.written" else ["a"])
    q.stats()  # the source retries what did not move
    assert everything(dlq) == ["a"]
    assert everything(q) == ["b"]
    broker.close()


@pytest.mark.parametrize("point", ["move.written", "move.committed"])
def test_kill_inside_a_redrive(point: str, namespace: str, tmp_path: Path,
                               procs: Procs) -> None:
    """A redrive killed before or after its commit: the message is back exactly once."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    q = broker.create_queue("q", max_deliveries=1)
    q.put("a")
    m = q.get(lease=30)
    assert m is not None
    assert m.nack() == "q.dlq"
    kill9(paused(namespace, "q.dlq", "redrive", point, tmp_path, procs))
    dlq = broker.queue("q.dlq")
    assert [x.payload for x in q.peek()] == ([] if point == "move.written" else ["a"])
    dlq.redrive()  # finishes what the dead one left
    assert everything(q) == ["a"]
    assert everything(dlq) == []
    broker.close()
