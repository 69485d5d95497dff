"""Reliable delivery through the local API: leases, acks, nacks, delays, dead letters."""

from __future__ import annotations

import threading
import time

import pytest

import zoldyq


def payloads(msgs: list[zoldyq.Message]) -> list[object]:
    return [m.payload for m in msgs]


def lease_a_and_b(q: zoldyq.Queue, first: float) -> tuple[zoldyq.Message, zoldyq.Message]:
    """Queue "a" and "b", lease "a" for ``first`` seconds and "b" for 30."""
    q.put_many(["a", "b"])
    a, b = q.get(lease=first), q.get(lease=30)
    assert a is not None
    assert b is not None
    return a, b


def test_a_lease_hides_the_message_until_acked(broker: zoldyq.Broker) -> None:
    """A leased message is out of sight but counted; ack removes it; a second ack is 409."""
    q = broker.queue("jobs")
    q.put_many(["a", "b"])
    m = q.get(lease=30)
    assert m is not None
    assert (m.payload, m.delivery_count) == ("a", 1)
    assert m.lease_id
    assert m.lease_expires_at is not None
    assert m.lease_expires_at > time.time_ns() // 1000 + 29_000_000
    stats = q.stats()
    assert (stats["size"], stats["inflight"]) == (1, 1)
    m.ack()
    with pytest.raises(zoldyq.LeaseExpired) as err:
        q.ack(m.lease_id)
    assert err.value.http_status == 409
    assert q.stats()["acked_total"] == 1
    assert payloads(q.get_many(10)) == ["b"]


def test_expiry_and_nack_give_back_at_the_head(broker: zoldyq.Broker) -> None:
    """An expired or nacked message comes back ahead of newer ones, its count increased."""
    q = broker.queue("jobs")
    q.put_many(["a", "b", "c"])
    a = q.get(lease=0.1)
    b = q.get(lease=30)
    assert a is not None
    assert b is not None
    time.sleep(0.15)
    assert b.nack() is None
    got = q.get_many(10, lease=30)
    assert payloads(got) == ["a", "b", "c"]
    assert [m.delivery_count for m in got] == [2, 2, 1]
    with pytest.raises(zoldyq.LeaseExpired):
        a.ack()  # its lease expired: someone else holds the message now
    assert q.ack_many([m.lease_id for m in got] + ["1.2.3", "junk"]) == ["1.2.3", "junk"]
    assert q.stats()["redelivered_total"] == 2


def test_an_expired_lease_is_not_acked_before_anything_reclaims_it(broker: zoldyq.Broker) -> None:
    """Past its deadline a lease is not held even if no one has touched the queue since:
    the message's own ack (one C call on the compiled path) and the queue's both say so."""
    q = broker.queue("jobs")
    a, b = lease_a_and_b(q, 0.05)
    time.sleep(0.1)
    with pytest.raises(zoldyq.LeaseExpired):
        a.ack()
    with pytest.raises(zoldyq.LeaseExpired):
        q.ack(a.lease_id)
    b.ack()
    assert payloads(q.get_many(10)) == ["a"]


def test_every_lease_is_checked_even_after_a_good_one(broker: zoldyq.Broker) -> None:
    """The handle remembers the last lease it checked; anything else is checked anew."""
    q = broker.queue("jobs")
    q.put_many(["a", "b", "c"])
    first = q.get(lease=30)
    assert first is not None
    for bad in (True, -1, 10**9, "30"):
        with pytest.raises(zoldyq.ConfigError):
            q.get(lease=bad)  # type: ignore[arg-type]
    short = q.get(lease=0)  # a lease of 0 s lasts the least there is: 1 ms
    again = q.get(lease=30)
    assert short is not None
    assert again is not None
    assert short.lease_expires_at < first.lease_expires_at  # 1 ms, not the 30 s remembered
    assert again.lease_expires_at - short.lease_expires_at > 20_000_000
    assert [m.payload for m in (first, short, again)] == ["a", "b", "c"]


def test_nack_with_delay_and_extend(broker: zoldyq.Broker) -> None:
    """nack(delay) hides the message for the delay; extend keeps a lease past its deadline."""
    q = broker.queue("jobs")
    a, b = lease_a_and_b(q, 0.2)
    new = a.extend(5)
    assert new > time.time_ns() // 1000 + 4_000_000
    time.sleep(0.3)
    assert q.stats()["inflight"] == 2  # extended: not expired
    b.nack(delay=0.3)
    assert q.stats()["delayed"] == 1
    assert q.get() is None
    m = q.get(timeout=2.0)
    assert m is not None
    assert m.payload == "b"
    a.ack()


def test_a_message_ack_moves_the_dead_letters_another_step_left(broker: zoldyq.Broker) -> None:
    """Dead letters found by a step that does not move them (the engine's own peek, as a
    worker's stats would) go to the DLQ on the next ack, even the message's one-call ack."""
    q = broker.create_queue("jobs", max_deliveries=1)
    _, b = lease_a_and_b(q, 0.05)
    time.sleep(0.1)
    sq = q._sq
    assert sq is not None
    sq.peek(10)  # finds a past its last delivery: DEAD, waiting to move
    assert "jobs.dlq" not in broker.queues()
    b.ack()
    assert payloads(broker.queue("jobs.dlq").peek()) == ["a"]
    assert q.stats()["dead_lettered_total"] == 1


def test_max_deliveries_moves_to_the_dead_letter_queue_and_redrive_brings_back(
        broker: zoldyq.Broker) -> None:
    """Past max_deliveries a message goes to <name>.dlq with its count; redrive returns it."""
    q = broker.create_queue("jobs", max_deliveries=2)
    q.put_many(["a", "b"])
    first = q.get(lease=30)
    assert first is not None
    assert first.nack() is None
    second = q.get(lease=0.05)
    assert second is not None
    assert second.delivery_count == 2
    time.sleep(0.1)
    assert payloads(q.peek()) == ["b"]  # expiry after the last delivery: dead-lettered
    assert "jobs.dlq" in broker.queues()
    dlq = broker.queue("jobs.dlq")
    stats = q.stats()
    assert stats["dead_lettered_total"] == 1
    assert (stats["size"], stats["inflight"]) == (1, 0)
    [dead] = dlq.peek()
    assert dead.payload == "a"
    assert dlq.redrive() == 1
    assert len(dlq) == 0
    back = q.get(lease=30)
    assert back is not None
    assert (back.payload, back.delivery_count) == ("a", 1)  # back at the head, counted afresh
    assert back.nack() is None
    third = q.get(lease=30)
    assert third is not None
    assert third.nack() == "jobs.dlq"


def test_custom_dead_letter_queue_and_settings_conflicts(broker: zoldyq.Broker) -> None:
    """dead_letter_queue names the DLQ; other settings for an existing queue are a conflict."""
    q = broker.create_queue("mail", max_deliveries=1, dead_letter_queue="graveyard")
    q.put("x")
    m = q.get(lease=30)
    assert m is not None
    assert m.nack() == "graveyard"
    assert payloads(broker.queue("graveyard").get_many()) == ["x"]
    with pytest.raises(zoldyq.QueueExists, match="other limits"):
        broker.create_queue("mail", max_deliveries=3, exist_ok=True)
    assert broker.create_queue("mail", max_deliveries=1, dead_letter_queue="graveyard",
                               exist_ok=True).name == "mail"
    with pytest.raises(zoldyq.ConfigError):
        broker.create_queue("self", max_deliveries=1, dead_letter_queue="self")


def test_lease_context_manager_acks_or_nacks(broker: zoldyq.Broker) -> None:
    """with q.lease(): success acks, an exception nacks (it comes back), nothing yields None."""
    q = broker.queue("jobs")
    q.put_many(["ok", "fails"])
    with q.lease(30) as m:
        assert m is not None
        assert m.payload == "ok"
    with pytest.raises(RuntimeError), q.lease(30) as m:
        raise RuntimeError("worker failed")
    assert payloads(q.peek()) == ["fails"]
    assert q.stats()["acked_total"] == 1
    q.clear()
    with q.lease(30, timeout=0.05) as m:
        assert m is None


def test_delayed_put_is_invisible_until_due(broker: zoldyq.Broker) -> None:
    """delay/deliver_at hide a put until due; receipts carry deliver_at; due order kept."""
    q = broker.queue("later")
    now = time.time_ns() // 1000
    r1 = q.put("second", delay=0.4)
    r2 = q.put_bytes(b"first", deliver_at=now + 200_000)
    assert r1.deliver_at is not None
    assert r1.deliver_at >= now + 400_000
    assert r2.deliver_at == now + 200_000
    assert q.put("now").deliver_at is None
    assert payloads(q.get_many(10)) == ["now"]
    assert q.stats()["delayed"] == 2
    got = [q.get(timeout=2.0) for _ in range(2)]
    assert [m.payload if m else None for m in got] == [b"first", "second"]
    assert time.time_ns() // 1000 >= now + 400_000
    with pytest.raises(zoldyq.ConfigError):
        q.put("x", delay=-1)


def test_a_parked_consumer_wakes_when_a_delayed_message_falls_due(
        broker: zoldyq.Broker) -> None:
    """A waiter parked before a delayed put gets it when due, not after its poll slice."""
    q = broker.queue("later")
    q.put("warm")
    q.get()
    got: list[float] = []

    def wait() -> None:
        m = q.get(timeout=5.0)
        if m is not None:
            got.append(time.monotonic())

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.1)
    due = time.monotonic() + 0.2
    q.put("soon", delay=0.2)
    t.join(6)
    assert got
    assert due - 0.01 <= got[0] < due + 0.3


def test_requeue_puts_plain_taken_messages_back_at_the_head_in_order(
        broker: zoldyq.Broker) -> None:
    """Messages taken but never delivered go back ahead of newer ones, in their order."""
    q = broker.queue("jobs")
    q.put_many([1, 2, 3])
    taken = q.get_many(2)
    q.put(4)
    assert q.requeue(taken) == 2
    assert payloads(q.get_many(10)) == [1, 2, 3, 4]
    assert q.stats()["requeued_total"] == 2


def test_leased_and_delayed_messages_count_against_the_caps(broker: zoldyq.Broker) -> None:
    """A queue full of leased and delayed messages refuses puts (429)."""
    q = broker.create_queue("small", max_messages=3)
    q.put_many(["a", "b"])
    assert q.get(lease=30) is not None
    q.put("c", delay=30)
    with pytest.raises(zoldyq.QueueFull):
        q.put("d")
    with pytest.raises(zoldyq.QueueFull):
        q.put("d", delay=1)
    stats = q.stats()
    assert (stats["size"], stats["inflight"], stats["delayed"]) == (1, 1, 1)


def test_oldest_age_is_the_lag_of_the_ready_queue(broker: zoldyq.Broker) -> None:
    """oldest_age_seconds is the age of the oldest ready message, 0 when empty."""
    q = broker.queue("lag")
    q.put("x")
    assert q.stats()["oldest_age_seconds"] == 0 or q.stats()["oldest_age_seconds"] < 1
    time.sleep(0.2)
    assert 0.15 < q.stats()["oldest_age_seconds"] < 5
    q.get()
    assert q.stats()["oldest_age_seconds"] == 0


async def _aget(q: zoldyq.Queue) -> zoldyq.Message | None:
    return await q.aget(timeout=1.0, lease=30)


def test_async_lease(broker: zoldyq.Broker) -> None:
    """aget(lease=) leases like get."""
    import asyncio

    q = broker.queue("aio")
    q.put("x")
    m = asyncio.run(_aget(q))
    assert m is not None
    assert m.lease_id
    m.ack()
    assert q.stats()["acked_total"] == 1


def test_redrive_by_name_moves_messages_put_into_a_dlq(broker: zoldyq.Broker) -> None:
    """Messages put straight into `<name>.dlq` go back to `<name>` on redrive, at its head."""
    broker.queue("jobs.dlq").put_many([1, 2])
    broker.queue("jobs").put(0)
    assert broker.queue("jobs.dlq").redrive() == 2
    assert len(broker.queue("jobs.dlq")) == 0
    assert payloads(broker.queue("jobs").get_many(10)) == [1, 2, 0]
    broker.queue("orphan.dlq").put(1)
    assert broker.queue("orphan.dlq").redrive() == 0  # no queue 'orphan': it stays
    assert len(broker.queue("orphan.dlq")) == 1
