"""Delayed delivery at scale: visible in due order, never early, promptly when due."""

from __future__ import annotations

import random
import time

import zoldyq


def test_ten_thousand_delayed_messages_arrive_in_due_order_never_early(
        broker: zoldyq.Broker) -> None:
    """10 000 puts with random delays: each is invisible until its deliver_at, handed out
    in deliver_at order, and within a second of due (no polling daemon: the consumer's
    timed wait is bounded by the next due time)."""
    q = broker.create_queue("later", max_messages=20_000, max_bytes=4 << 20)
    rng = random.Random(11)
    base = time.time_ns() // 1000 + 2_000_000  # after the last put, even on a slow machine
    due = {}
    for i in range(10_000):
        at = base + rng.randrange(2_500_000)
        assert q.put(i, deliver_at=at).deliver_at == at
        due[i] = at
    assert q.stats()["delayed"] == 10_000
    got: list[tuple[int, int]] = []  # (message, when it was received, µs)
    end = time.monotonic() + 30
    while len(got) < 10_000 and time.monotonic() < end:
        for m in q.get_many(1000, timeout=1.0):
            got.append((m.payload, time.time_ns() // 1000))
    assert len(got) == 10_000
    assert sorted(i for i, _ in got) == list(range(10_000))
    early = [i for i, t in got if t < due[i]]
    late = [i for i, t in got if t > due[i] + 1_000_000]
    assert not early
    assert not late, f"{len(late)} more than 1 s late"
    order = [due[i] for i, _ in got]
    assert order == sorted(order)
    assert q.stats()["delayed"] == 0
