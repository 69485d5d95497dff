"""The local API in one process: queues, limits, errors, waiting, asyncio."""

from __future__ import annotations

import asyncio
import os
import stat
import threading
import time

import pytest

import zoldyq
from zoldyq.shm import segment, speedups
from zoldyq.shm.layout import KIND_JSON


@pytest.fixture(autouse=True, params=["c", "pure"])
def engine_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on the compiled path and on the pure-Python one."""
    if request.param == "pure":
        monkeypatch.setattr(speedups, "ENABLED", False)
    elif not speedups.ENABLED:
        pytest.skip("zoldyq.shm._speedups is not built: the C path is untested")
    return str(request.param)


def test_json_and_raw_messages_round_trip(broker: zoldyq.Broker) -> None:
    """A JSON value comes back decoded, raw bytes come back as bytes, in order."""
    q = broker.queue("emails")
    receipt = q.put({"to": "a@b.c", "n": [1, 2.5, None]})
    assert receipt.queue_size == 1
    assert abs(receipt.enqueued_at - time.time() * 1e6) < 5e6
    q.put_bytes(b"\x00raw\xff")
    first, second = q.get(), q.get()
    assert first is not None
    assert second is not None
    assert (first.payload, first.is_raw, first.queue_name) == (
        {"to": "a@b.c", "n": [1, 2.5, None]}, False, "emails")
    assert first.enqueued_at == receipt.enqueued_at
    assert (second.payload, second.is_raw) == (b"\x00raw\xff", True)
    assert q.get() is None


def test_put_many_and_get_many_keep_order(broker: zoldyq.Broker) -> None:
    """A batch goes in whole and comes out in order, up to ``max`` at a time."""
    q = broker.queue("batch")
    assert q.put_many(range(10)).queue_size == 10
    assert [m.payload for m in q.get_many(4)] == [0, 1, 2, 3]
    assert [m.payload for m in q.get_many(100)] == [4, 5, 6, 7, 8, 9]
    assert q.get_many(5) == []


def test_put_records_stores_encoded_json_as_is(broker: zoldyq.Broker) -> None:
    """Transports hand over JSON bytes; they come back byte for byte."""
    q = broker.queue("spliced")
    q.put_records([(KIND_JSON, b'{"a": 1}')])
    msg = q.get()
    assert msg is not None
    assert msg.data == b'{"a": 1}'
    assert msg.payload == {"a": 1}


def test_full_queue_rejects_without_dropping(broker: zoldyq.Broker) -> None:
    """A full queue raises QueueFull with its numbers and keeps every accepted message."""
    q = broker.create_queue("small", max_messages=3)
    q.put_many([1, 2, 3])
    with pytest.raises(zoldyq.QueueFull, match=r"^Queue 'small' is at capacity$") as info:
        q.put(4)
    assert info.value.fields() == {
        "queue_name": "small", "queue_capacity": 3, "queue_size": 3,
        "queue_max_bytes": info.value.max_bytes,
    }
    assert info.value.http_status == 429
    with pytest.raises(zoldyq.QueueFull):
        q.put_many([4, 5])
    assert [m.payload for m in q.get_many(10)] == [1, 2, 3]
    assert q.stats()["queue_full_total"] == 2


def test_oversized_message_is_refused(broker: zoldyq.Broker) -> None:
    """A payload over max_message_bytes raises MessageTooLarge (413) with both sizes."""
    q = broker.queue("big")
    limit = broker.defaults.max_message_bytes
    with pytest.raises(zoldyq.MessageTooLarge) as info:
        q.put_bytes(b"x" * (limit + 1))
    assert str(info.value) == f"message of {limit + 1} bytes exceeds the limit of {limit} bytes"
    assert info.value.http_status == 413
    q.put_bytes(b"x" * limit)
    assert len(q) == 1


@pytest.mark.parametrize("name", ["", "a" * 65, "sp ace", "slash/", "ü", "../x", None, 5])
def test_bad_queue_names_are_refused(broker: zoldyq.Broker, name: object) -> None:
    """Names outside [A-Za-z0-9_.-]{1,64} raise InvalidName (400)."""
    with pytest.raises(zoldyq.InvalidName, match="invalid queue name"):
        broker.queue(name)  # type: ignore[arg-type]


def test_unencodable_payload_is_refused(broker: zoldyq.Broker) -> None:
    """A value JSON cannot express raises InvalidPayload and enqueues nothing."""
    q = broker.queue("json")
    with pytest.raises(zoldyq.InvalidPayload, match="payload is not valid JSON"):
        q.put({1: object()})
    assert not broker.exists("json")  # refused before the queue was even created


def test_get_on_a_missing_queue_is_not_found(broker: zoldyq.Broker) -> None:
    """Only puts create queues: a get on an unknown name raises QueueNotFound."""
    with pytest.raises(zoldyq.QueueNotFound, match=r"^Queue 'nope' does not exist$"):
        broker.queue("nope").get()
    assert "nope" not in broker.queues()


def test_create_queue_with_caps_and_conflicts(broker: zoldyq.Broker) -> None:
    """Explicit caps stick; create_queue returns the Queue; the same caps twice is
    "already exists" (unless exist_ok), other caps "with other limits" (409)."""
    q = broker.create_queue("caps", max_messages=5, max_message_bytes=1024)
    assert isinstance(q, zoldyq.Queue)
    stats = q.stats()
    assert (stats["capacity"], stats["max_message_bytes"]) == (5, 1024)
    again = broker.create_queue("caps", max_messages=5, max_message_bytes=1024, exist_ok=True)
    assert again.name == "caps"
    with pytest.raises(zoldyq.QueueExists, match=r"^Queue 'caps' already exists$"):
        broker.create_queue("caps", max_messages=5, max_message_bytes=1024)
    with pytest.raises(zoldyq.QueueExists,
                       match=r"^Queue 'caps' already exists with other limits$"):
        broker.create_queue("caps", max_messages=6, exist_ok=True)
    with pytest.raises(zoldyq.ConfigError, match="max_messages must be"):
        broker.create_queue("bad", max_messages=0 - 1)


def test_create_queue_twice_with_the_same_caps_says_already_exists(
        broker: zoldyq.Broker) -> None:
    """create_queue returns the Queue; the same caps twice without exist_ok is QueueExists
    "already exists" (not "with other limits", which is for a real conflict)."""
    broker.create_queue("twice", max_messages=5)
    with pytest.raises(zoldyq.QueueExists, match=r"^Queue 'twice' already exists$"):
        broker.create_queue("twice", max_messages=5)
    with pytest.raises(zoldyq.QueueExists, match=r"^Queue 'twice' already exists$"):
        broker.create_queue("twice")


def test_queue_count_is_limited(namespace: str) -> None:
    """A namespace holds at most max_queues queues; deleting one frees a slot."""
    with zoldyq.create(namespace, max_queues=2, max_bytes=1 << 20) as b:
        b.queue("a").put(1)
        b.queue("b").put(1)
        with pytest.raises(zoldyq.TooManyQueues) as info:
            b.queue("c").put(1)
        assert info.value.http_status == 507
        b.delete("a")
        b.queue("c").put(1)
        assert b.queues() == ["b", "c"]


def test_delete_and_recreate_is_a_new_queue(broker: zoldyq.Broker) -> None:
    """A handle on a deleted queue never sees the old messages in the new queue."""
    q = broker.queue("gen")
    q.put("old")
    other = zoldyq.attach(broker.namespace)
    try:
        other.delete("gen")
        with pytest.raises(zoldyq.QueueNotFound):
            q.get()
        q.put("new")  # auto-creates a fresh queue in a new generation
        assert [m.payload for m in other.queue("gen").get_many(10)] == ["new"]
        other.delete("gen")
        other.queue("gen").put("newer")  # re-created elsewhere: the old handle follows
        assert [m.payload for m in q.get_many(10)] == ["newer"]
    finally:
        other.close()


def test_clear_empties_the_queue(broker: zoldyq.Broker) -> None:
    """clear() drops what is queued; the counters tell cleared from dequeued."""
    q = broker.queue("clear")
    q.put_many([1, 2, 3])
    q.get()
    assert q.clear() == 2
    stats = q.stats()
    assert (stats["size"], stats["dequeued_total"], stats["cleared_total"]) == (0, 1, 2)


def test_stats_are_shared_by_every_attached_broker(broker: zoldyq.Broker) -> None:
    """Counters live in shared memory: another attachment reads the same numbers."""
    q = broker.queue("stats")
    q.put_many(["a", "b"])
    q.get()
    with zoldyq.attach(broker.namespace) as other:
        s = other.queue("stats").stats()
    assert (s["size"], s["enqueued_total"], s["dequeued_total"]) == (1, 2, 1)
    assert sum(s["enqueue_histogram"][:-1]) == 1  # one batch observed
    assert sum(s["dequeue_histogram"][:-1]) == 1


def test_blocking_get_times_out_empty(broker: zoldyq.Broker) -> None:
    """A get with a timeout on an empty queue returns None after about that long."""
    q = broker.queue("idle")
    q.put(0)
    q.get()
    t0 = time.monotonic()
    assert q.get(timeout=0.3) is None
    assert 0.29 <= time.monotonic() - t0 < 1.5
    assert q.stats()["dequeue_timeout_total"] == 1
    assert q.stats()["waiters"] == 0


def test_blocked_get_wakes_on_put_from_another_thread(broker: zoldyq.Broker) -> None:
    """A consumer parked on the doorbell wakes when a message arrives."""
    q = broker.queue("wake")
    q.put(0)
    q.get()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(q.get(timeout=10)))
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    q.put("ding")
    t.join(5)
    assert time.monotonic() - t0 < 1.0
    assert [m.payload for m in got] == ["ding"]  # type: ignore[union-attr]


def test_interrupt_wakes_every_waiter_at_once(broker: zoldyq.Broker) -> None:
    """interrupt() (shutdown) returns every blocked get immediately, empty."""
    q = broker.queue("shutdown")
    q.put(0)
    q.get()
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(q.get(timeout=20)))
               for _ in range(10)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while q.stats()["waiters"] < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    broker.interrupt()
    for t in threads:
        t.join(5)
    assert time.monotonic() - t0 < 1.0
    assert results == [None] * 10
    assert q.get(timeout=5) is None  # later waits do not block either


def test_stream_yields_until_idle(broker: zoldyq.Broker) -> None:
    """stream() yields what arrives and ends after the idle timeout."""
    q = broker.queue("stream")
    q.put_many([1, 2, 3])
    assert [m.payload for m in q.stream(timeout=0.2)] == [1, 2, 3]


def test_aget_waits_without_blocking_the_loop(broker: zoldyq.Broker) -> None:
    """aget parks on the doorbell while the event loop keeps running other tasks."""
    q = broker.queue("async")
    q.put(0)
    q.get()

    async def main() -> tuple[object, int, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        waiters = [asyncio.create_task(q.aget(timeout=30)) for _ in range(20)]
        # the loop keeps turning while all 20 wait (a loaded box only slows the ticks)
        for _ in range(3000):
            if ticks >= 5:
                break
            await asyncio.sleep(0.01)
        parked = sum(not w.done() for w in waiters)
        await asyncio.to_thread(q.put_many, list(range(20)))
        got = await asyncio.wait_for(asyncio.gather(*waiters), 20)
        tick.cancel()
        return sorted(m.payload for m in got), ticks, parked  # type: ignore[union-attr]

    payloads, ticks, parked = asyncio.run(main())
    assert ticks >= 5
    assert parked == 20
    assert payloads == list(range(20))


def test_aget_times_out_empty(broker: zoldyq.Broker) -> None:
    """aget returns None after its timeout."""
    q = broker.queue("async-idle")
    q.put(0)
    q.get()
    t0 = time.monotonic()
    assert asyncio.run(q.aget(timeout=0.3)) is None
    assert 0.29 <= time.monotonic() - t0 < 2


def test_objects_are_private_to_the_owner(broker: zoldyq.Broker) -> None:
    """Every shared-memory object and semaphore is created mode 0600."""
    broker.queue("mode").put(1)
    entries = segment.leftovers(f"/zoldyq.{broker.namespace}")
    assert len(entries) == 3  # the registry; the ring (its locks inside) and its doorbell
    for entry in entries:
        st = os.stat(os.path.join(segment.SHM_DIR, entry))
        assert stat.S_IMODE(st.st_mode) == 0o600, entry
        assert st.st_uid == os.getuid()


def test_destroy_removes_every_object(namespace: str) -> None:
    """destroy() unlinks the namespace's objects; attached handles see queues closed."""
    b = zoldyq.create(namespace, max_bytes=1 << 20)
    q = b.queue("x")
    q.put(1)
    zoldyq.destroy(namespace)
    assert segment.leftovers(f"/zoldyq.{namespace}") == []
    with pytest.raises(zoldyq.ZoldyQError):
        q.put(2)
    b.close()
    with pytest.raises(zoldyq.NamespaceNotFound, match="does not exist on this host"):
        zoldyq.attach(namespace)


def test_queue_creation_checks_free_space(broker: zoldyq.Broker,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue whose max_bytes exceeds free /dev/shm is refused with a clear error."""
    monkeypatch.setattr(segment, "shm_free_bytes", lambda: 2 << 20)
    expected = r"^/dev/shm has 2097152 bytes free, 8392704 bytes are needed"
    with pytest.raises(zoldyq.StorageExhausted, match=expected):
        broker.create_queue("huge", max_bytes=8 << 20)
    assert not broker.exists("huge")
    broker.queue("fits").put(1)  # the broker's small default still fits


def test_idle_blocked_consumers_cost_almost_no_cpu(broker: zoldyq.Broker) -> None:
    """100 consumers parked on an empty queue use (nearly) no CPU while they wait."""
    q = broker.queue("idle100")
    q.put(0)
    q.get()
    threads = [threading.Thread(target=q.get, kwargs={"timeout": 3}) for _ in range(100)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while q.stats()["waiters"] < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(1.0)
    cpu = time.process_time() - cpu0
    wall = time.monotonic() - wall0
    broker.interrupt()
    for t in threads:
        t.join(5)
    assert cpu < 0.05 * wall, f"{cpu:.3f} s of CPU in {wall:.2f} s"


def test_deleting_a_queue_wakes_its_waiters(broker: zoldyq.Broker) -> None:
    """A get parked on a queue that another process deletes ends at once: QueueNotFound."""
    q = broker.queue("doomed")
    q.put(0)
    q.get()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            q.get(timeout=20)
        except zoldyq.QueueNotFound as ex:
            errors.append(ex)

    t = threading.Thread(target=wait)
    t.start()
    deadline = time.monotonic() + 5
    while q.stats()["waiters"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    with zoldyq.attach(broker.namespace) as other:
        other.delete("doomed")
    t.join(5)
    assert time.monotonic() - t0 < 1.0
    assert [type(e) for e in errors] == [zoldyq.QueueNotFound]


def test_peek_leaves_messages_in_place(broker: zoldyq.Broker) -> None:
    """peek() shows the head of the queue without taking anything."""
    q = broker.queue("peek")
    q.put_many(["a", "b", "c"])
    assert [m.payload for m in q.peek(2)] == ["a", "b"]
    assert [m.payload for m in q.peek()] == ["a", "b", "c"]
    assert [m.payload for m in q.get_many(10)] == ["a", "b", "c"]


def test_async_timeouts_are_counted(broker: zoldyq.Broker) -> None:
    """An aget that waits in vain counts as a dequeue timeout, like a blocking get."""
    q = broker.queue("async-count")
    q.put(0)
    q.get()
    assert asyncio.run(q.aget(timeout=0.1)) is None
    assert asyncio.run(q.aget(timeout=0)) is None  # did not wait: not a timeout
    assert q.stats()["dequeue_timeout_total"] == 1


def test_a_handle_outlives_the_mapping_of_its_deleted_queue(broker: zoldyq.Broker) -> None:
    """A long-lived handle whose old queue was deleted, re-created and then unmapped here
    (retired mappings are closed after a while) still reaches the new queue."""
    q = broker.queue("longlived")
    q.put("old")
    stale = q._sq
    with zoldyq.attach(broker.namespace) as other:
        other.delete("longlived")
        other.queue("longlived").put("new")
    assert stale is not None
    stale.close()  # what the broker does to a retired mapping after its grace period
    assert q.put_many([]).queue_size == 1  # an empty batch too (was a 500 over HTTP)
    assert [m.payload for m in q.get_many(10)] == ["new"]
    q.put("newer")
    assert [m.payload for m in q.get_many(10)] == ["newer"]
