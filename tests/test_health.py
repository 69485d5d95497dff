"""/health: the roadmap's shape when the namespace works, 503 with a reason when it does not."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import zoldyq
from zoldyq.errors import BrokenError
from zoldyq.ops import health

HOLD = """
import sys, time, zoldyq
b = zoldyq.attach(sys.argv[1])
which = sys.argv[2]
if which == "registry":
    lock = b.registry.lock
else:
    sq = b._shared("q", create=False)
    lock = sq.put_lock if which == "put" else sq.get_lock
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


@pytest.fixture
def holder(broker: zoldyq.Broker) -> Iterator[object]:
    """Start a process that takes one lock of the namespace and keeps it; killed at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(which: str) -> subprocess.Popen[str]:
        p = subprocess.Popen([sys.executable, "-c", HOLD, broker.namespace, which],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(p)
        assert p.stdout is not None
        assert p.stdout.readline() == "held\n"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait(timeout=30)


def wait_unhealthy(broker: zoldyq.Broker, lock_timeout: float) -> dict[str, object]:
    """Poll until 503; every answer comes at once, whatever the probe is stuck on."""
    deadline = time.monotonic() + 10
    while True:
        t0 = time.monotonic()
        status, body = health.check(broker, lock_timeout=lock_timeout)
        assert time.monotonic() - t0 < 0.1, "check() waited for the probe"
        if status == 503 or time.monotonic() > deadline:
            assert status == 503, body
            return body
        time.sleep(0.05)


def wait_healthy(broker: zoldyq.Broker) -> dict[str, object]:
    deadline = time.monotonic() + 10
    while True:
        status, body = health.check(broker, lock_timeout=0.5)
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, body
            return body


def test_shape_is_the_roadmaps(broker: zoldyq.Broker) -> None:
    """Status, uptime, queue count and per-queue figures (the roadmap's, plus reliable
    delivery's), with nothing else."""
    broker.create_queue("emails", max_messages=200)
    q = broker.queue("emails")
    q.put_many(range(50))
    q.get_many(4)
    broker.create_queue("tiny", max_messages=1)
    broker.queue("tiny").put(1)
    with pytest.raises(zoldyq.QueueFull):
        broker.queue("tiny").put(2)
    status, body = health.check(broker)
    assert status == 200
    assert isinstance(body["uptime_seconds"], int)
    ages = {n: q.pop("oldest_age_seconds") for n, q in body["queues"].items()}
    assert ages["emails"] >= 0
    assert ages["tiny"] >= 0
    delivery = {"inflight": 0, "delayed": 0, "acked_total": 0, "redelivered_total": 0,
                "dead_lettered_total": 0}
    assert body == {
        "status": "healthy",
        "uptime_seconds": body["uptime_seconds"],
        "total_queues": 2,
        "queues": {
            "emails": {
                "size": 46,
                "capacity": 200,
                "utilization": 0.23,
                "enqueued_total": 50,
                "dequeued_total": 4,
                "queue_full_count": 0,
                **delivery,
            },
            "tiny": {
                "size": 1,
                "capacity": 1,
                "utilization": 1.0,
                "enqueued_total": 1,
                "dequeued_total": 0,
                "queue_full_count": 1,
                **delivery,
            },
        },
    }


def test_empty_namespace(broker: zoldyq.Broker) -> None:
    """No queues is healthy too."""
    assert health.check(broker)[1]["queues"] == {}


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("put", r"the put lock of queue 'q' has been held for \d+\.\d s \(a stuck process\?\)"),
        ("get", r"the get lock of queue 'q' has been held for \d+\.\d s \(a stuck process\?\)"),
        ("registry", r"the registry lock has been held for \d+\.\d s \(a stuck process\?\)"),
    ],
)
def test_stuck_lock_is_unhealthy_until_its_holder_dies(
    broker: zoldyq.Broker, holder, which: str, reason: str  # type: ignore[no-untyped-def]
) -> None:
    """A live process that keeps a lock makes /health 503; once it dies, the lock is repaired."""
    broker.queue("q").put(1)
    proc = holder(which)
    started = time.monotonic()
    body = wait_unhealthy(broker, lock_timeout=0.3)
    assert time.monotonic() - started < 5
    assert set(body) == {"status", "reason"}
    assert body["status"] == "unhealthy"
    assert re.fullmatch(reason, body["reason"]), body["reason"]
    proc.kill()
    proc.wait(timeout=30)
    wait_healthy(broker)
    assert [m.payload for m in broker.queue("q").get_many(5)] == [1]


def test_lock_that_cannot_be_repaired(broker: zoldyq.Broker, holder) -> None:  # type: ignore[no-untyped-def]
    """A holder that died inside and a repair that fails: 503 saying which lock and why."""
    broker.queue("q").put(1)
    sq = broker._shared("q", create=False)
    repair = sq.get_lock.on_dirty

    def broken() -> None:
        raise BrokenError("the ring does not parse")

    proc = holder("get")
    proc.kill()
    proc.wait(timeout=30)
    sq.get_lock.on_dirty = broken
    try:
        body = wait_unhealthy(broker, lock_timeout=2.0)
        assert body == ({
            "status": "unhealthy",
            "reason": "the get lock of queue 'q' cannot be recovered: the ring does not parse",
        }), body  # fmt: skip
    finally:
        sq.get_lock.on_dirty = repair
    wait_healthy(broker)


def test_check_never_waits_for_a_stuck_lock(
    broker: zoldyq.Broker, holder  # type: ignore[no-untyped-def]
) -> None:
    """While a live process keeps a lock, every health check answers within 50 ms.

    The locks are probed off the request path: a check on an event loop must
    not hold up the loop's other requests for a second each (issue 10, item 11).
    """
    broker.queue("q").put(1)
    holder("put")
    slowest = 0.0
    statuses = set()
    for _ in range(20):
        t0 = time.monotonic()
        statuses.add(health.check(broker, lock_timeout=0.2)[0])
        slowest = max(slowest, time.monotonic() - t0)
        time.sleep(0.05)
    assert slowest < 0.05, slowest
    assert 503 in statuses


def test_destroyed_namespace(namespace: str) -> None:
    """A namespace destroyed under a live handle is reported, not crashed on."""
    b = zoldyq.create(namespace, max_queues=4)
    try:
        b.queue("q").put(1)
        zoldyq.destroy(namespace)
        assert health.check(b) == (503, {
            "status": "unhealthy",
            "reason": f"namespace '{namespace}' was destroyed",
        })  # fmt: skip
    finally:
        b.close()
