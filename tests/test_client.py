"""``zoldyq.connect``: the same code gives the same results, errors and order on every engine.

Each test of the first part runs against ``shm://<ns>`` (local shared memory),
``http://`` (a real ``zoldyq serve``: gunicorn and the sidecar) and ``redis://`` (a
real redis-server), through nothing but the ``Broker``/``Queue``/``Message`` interface.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

_names = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    """One real server for the module; every test uses its own queues."""
    ns = unique_namespace()
    try:
        with servers.serve(ns, workers=2, max_queues=200, dequeue_max_timeout=2) as srv:
            yield srv
    finally:
        zoldyq.destroy(ns)


@pytest.fixture(scope="module")
def local_namespace() -> Iterator[str]:
    ns = unique_namespace()
    zoldyq.create(ns, max_queues=200).close()
    try:
        yield ns
    finally:
        zoldyq.destroy(ns)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    from tests.helpers import redis_server

    with redis_server.start() as srv:
        yield srv.url


@pytest.fixture(params=["shm", "http", "redis"])
def broker(request: pytest.FixtureRequest) -> Iterator[Any]:
    """A Broker from ``zoldyq.connect`` on each engine."""
    if request.param == "redis":
        b = zoldyq.connect(request.getfixturevalue("redis_url"), namespace=unique_namespace())
    elif request.param == "shm":
        url = "shm://" + request.getfixturevalue("local_namespace")
        b = zoldyq.connect(url)
    else:
        srv = request.getfixturevalue("server")
        b = zoldyq.connect(srv.url, retries=0)  # finds the sidecar by itself (GET /info)
    try:
        yield b
    finally:
        b.close()


def qname() -> str:
    return f"c{next(_names)}-{time.monotonic_ns() % 10**6}"


def create(b: Any, name: str, **caps: Any) -> Any:
    return b.create_queue(name, exist_ok=True, **caps)


def test_put_get_same_message(broker: Any) -> None:
    """A JSON payload comes back with the same value, queue name, kind and bytes."""
    q = broker.queue(qname())
    r = q.put({"to": "a@b.c", "n": [1, 2.5, None]})
    assert r.queue_size == 1
    assert r.enqueued_at > 1_600_000_000 * 10**6
    m = q.get()
    assert m.payload == {"to": "a@b.c", "n": [1, 2.5, None]}
    assert (m.queue_name, m.is_raw, m.kind) == (q.name, False, zoldyq.api.KIND_JSON)
    assert m.data == b'{"to":"a@b.c","n":[1,2.5,null]}'
    assert m.enqueued_at == r.enqueued_at
    assert q.get() is None


def test_implements_the_api_protocols(broker: Any) -> None:
    """Queue and Message of every engine are the ones zoldyq/api.py declares, and so is
    the Broker's client side (the HTTP client has no server-side hooks: counters, locks)."""
    q = broker.queue(qname())
    q.put(1)
    for name in ("queue", "create_queue", "delete", "queues", "entries", "exists", "defaults",
                 "max_queues", "interrupt", "interrupted", "close", "namespace", "__enter__"):
        assert hasattr(broker, name), name
    assert isinstance(q, zoldyq.api.Queue)
    assert isinstance(q.get(), zoldyq.api.Message)


def test_raw_bytes_round_trip(broker: Any) -> None:
    """Raw bytes (also non-UTF-8) come back as the same bytes, marked raw."""
    q = broker.queue(qname())
    q.put_bytes(b"\x00\xffraw")
    q.put("after")
    m = q.get(lease=30)
    assert (m.payload, m.data, m.is_raw, m.delivery_count) == (b"\x00\xffraw", b"\x00\xffraw",
                                                               True, 1)
    m.ack()
    assert q.get().payload == "after"


def test_fifo_across_batches(broker: Any) -> None:
    """put, put_many and put_records interleave in one FIFO; get_many keeps the order."""
    q = broker.queue(qname())
    q.put(0)
    q.put_many([1, 2, 3])
    q.put_records([(zoldyq.api.KIND_JSON, b"4"), (zoldyq.api.KIND_JSON, b"5")])
    q.put(6)
    got = q.get_many(max=4) + q.get_many(max=100)
    assert [m.payload for m in got] == list(range(7))
    assert q.get_many(max=10) == []


def test_long_poll_wakes_on_put(broker: Any) -> None:
    """A get with a timeout returns the message put meanwhile, not after its timeout."""
    q = broker.queue(qname())
    q.put("create")
    q.get()
    late = threading.Timer(0.3, q.put, args=("late",))
    late.start()
    t0 = time.monotonic()
    m = q.get(timeout=5.0)
    late.join(10)  # its put has read its answer before the fixture closes the client
    assert m is not None
    assert m.payload == "late"
    assert time.monotonic() - t0 < 3.0


def test_wait_longer_than_one_server_poll(broker: Any) -> None:
    """A get waits its whole timeout even past the server's longest poll (2 s here)."""
    q = broker.queue(qname())
    q.put("create")
    q.get()
    late = threading.Timer(2.8, q.put, args=("late",))
    late.start()
    m = q.get(timeout=6.0)
    late.join(10)
    assert m is not None
    assert m.payload == "late"


def test_same_errors(broker: Any) -> None:
    """Each failure raises the same zoldyq exception class on every engine."""
    with pytest.raises(zoldyq.InvalidName):
        broker.queue("no/slash")
    with pytest.raises(zoldyq.QueueNotFound):
        broker.queue(qname()).get()
    with pytest.raises(zoldyq.InvalidPayload):
        broker.queue(qname()).put(object())
    small = create(broker, qname(), max_messages=2, max_message_bytes=1024)
    small.put(1)
    small.put(2)
    with pytest.raises(zoldyq.QueueFull, match=f"Queue '{small.name}' is at capacity"):
        small.put(3)
    with pytest.raises(zoldyq.MessageTooLarge) as info:
        small.put_bytes(b"x" * 2000)
    assert (info.value.size, info.value.limit) == (2000, 1024)
    assert [m.payload for m in small.get_many()] == [1, 2]


def test_stats_len_clear_delete(broker: Any) -> None:
    """stats, len, clear, queues and delete agree on every engine."""
    q = broker.queue(qname())
    q.put_many(["a", "b", "c"])
    q.get()
    s = q.stats()
    assert (s["name"], s["size"], s["enqueued_total"], s["dequeued_total"]) == (q.name, 2, 3, 1)
    assert len(q) == 2
    assert q.name in broker.queues()
    assert q.clear() == 2
    assert len(q) == 0
    q.delete()
    assert q.name not in broker.queues()
    with pytest.raises(zoldyq.QueueNotFound):
        q.stats()


def test_stream_yields_in_order_then_idles_out(broker: Any) -> None:
    """stream(timeout) yields every message in order, then ends after the idle timeout."""
    q = broker.queue(qname())
    q.put_many(list(range(50)))
    q.put_bytes(b"raw")
    got = [m.payload for m in q.stream(timeout=1.5)]
    assert got == [*range(50), b"raw"]


def test_async_get_and_stream(broker: Any) -> None:
    """aget_many and astream give the same messages, in order, without blocking the loop."""
    q = broker.queue(qname())
    q.put_many(list(range(10)))

    async def main() -> list[Any]:
        first = [m.payload for m in await q.aget_many(max=4)]
        rest = []
        async for m in q.astream():
            rest.append(m.payload)
            if len(rest) == 6:
                break
        none = await q.aget(timeout=0.2)
        return [*first, *rest, none]

    assert asyncio.run(main()) == [*range(10), None]


def test_leases_ack_nack_extend(broker: Any) -> None:
    """A leased message is hidden until acked; nack gives it back at the head with its
    delivery count; extend moves its expiry; a settled lease raises LeaseExpired."""
    q = broker.queue(qname())
    q.put_many(["a", "b"])
    m = q.get(lease=30)
    assert (m.payload, m.delivery_count) == ("a", 1)
    assert m.lease_id is not None
    assert m.lease_expires_at > time.time() * 1e6
    assert m.nack() is None
    again = q.get(lease=30)
    assert (again.payload, again.delivery_count) == ("a", 2)
    later = again.extend(60)
    assert later > m.lease_expires_at
    again.ack()
    with pytest.raises(zoldyq.LeaseExpired):
        q.ack(again.lease_id)
    b = q.get(lease=30)
    assert q.ack_many([b.lease_id, again.lease_id]) == [again.lease_id]
    assert q.get() is None
    s = q.stats()
    assert (s["inflight"], s["acked_total"], s["redelivered_total"]) == (0, 2, 1)


def test_lease_context_manager(broker: Any) -> None:
    """lease() acks when the block succeeds and gives the message back when it raises."""
    q = broker.queue(qname())
    q.put("job")

    def work() -> None:
        with q.lease(30) as m:
            assert m.payload == "job"
            raise RuntimeError("worker failed")

    with pytest.raises(RuntimeError, match="worker failed"):
        work()
    with q.lease(30) as m:
        assert (m.payload, m.delivery_count) == ("job", 2)
    assert q.get() is None
    with q.lease(30) as m:
        assert m is None


def test_delayed_put_and_peek(broker: Any) -> None:
    """A delayed message is invisible until due; peek shows ready ones without taking."""
    q = broker.queue(qname())
    q.put("now")
    r = q.put("later", delay=1.0)
    assert r.deliver_at is not None
    assert [m.payload for m in q.peek()] == ["now"]
    assert q.get().payload == "now"
    assert q.get() is None
    assert q.stats()["delayed"] == 1
    t0 = time.monotonic()
    m = q.get(timeout=5)
    assert m.payload == "later"
    assert time.monotonic() - t0 > 0.5


def test_leased_stream_acks_keep_it_flowing(broker: Any) -> None:
    """A leased stream of more messages than its prefetch: each acked as it comes, all
    arrive in order, once, and nothing is left in flight."""
    q = broker.queue(qname())
    q.put_many(list(range(35)))
    got = []
    for m in q.stream(timeout=3, lease=30):
        got.append((m.payload, m.delivery_count))
        m.ack()
        if len(got) == 35:
            break
    assert got == [(i, 1) for i in range(35)]
    assert q.get() is None
    wait_until(lambda: q.stats()["inflight"] == 0)


def test_leased_astream_nack_redelivers(broker: Any) -> None:
    """On an async leased stream a nacked message comes back (count 2) and acks settle."""
    q = broker.queue(qname())
    q.put_many(["a", "b"])

    async def main() -> list[tuple[Any, int]]:
        seen = []
        async for m in q.astream(lease=30):
            seen.append((m.payload, m.delivery_count))
            if len(seen) == 1:
                m.nack()
            else:
                m.ack()
            if len(seen) == 3:
                break
        await asyncio.sleep(0.2)  # let the last ack frame go out
        return seen

    seen = asyncio.run(main())
    assert sorted(seen) == [("a", 1), ("a", 2), ("b", 1)]
    assert q.get() is None
    wait_until(lambda: q.stats()["inflight"] == 0)


def wait_until(cond: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_dead_letter_and_redrive(broker: Any) -> None:
    """Past max_deliveries a nacked message moves to the dead-letter queue; redrive
    moves it back to its queue."""
    name = qname()
    q = create(broker, name, max_deliveries=1, dead_letter_queue=name + ".dead")
    q.put({"hook": 1})
    m = q.get(lease=30)
    assert m.nack() == name + ".dead"
    assert q.get() is None
    dead = broker.queue(name + ".dead")
    assert [d.payload for d in dead.peek()] == [{"hook": 1}]
    assert dead.redrive() == 1
    assert q.get().payload == {"hook": 1}


# -- HTTP only ------------------------------------------------------------------------


def test_eight_threads_share_one_http_broker(server: servers.Server) -> None:
    """8 producer and 8 consumer threads on one Broker: every message once, each
    producer's order kept in what every consumer saw."""
    per = 150
    with zoldyq.connect(server.url) as b:
        q = b.queue(qname())
        q.put("start")
        q.get()
        seen: list[list[tuple[int, int]]] = [[] for _ in range(8)]
        done = threading.Event()

        def produce(p: int) -> None:
            for i in range(per):
                q.put([p, i])

        def consume(c: int) -> None:
            while not done.is_set() or len(q):
                seen[c] += [tuple(m.payload) for m in q.get_many(max=7, timeout=0.2)]

        consumers = [threading.Thread(target=consume, args=(c,)) for c in range(8)]
        producers = [threading.Thread(target=produce, args=(p,)) for p in range(8)]
        for t in consumers + producers:
            t.start()
        for t in producers:
            t.join(60)
        done.set()
        for t in consumers:
            t.join(60)
    everything = [m for part in seen for m in part]
    assert sorted(everything) == sorted((p, i) for p in range(8) for i in range(per))
    for part in seen:
        for p in range(8):
            mine = [i for pp, i in part if pp == p]
            assert mine == sorted(mine)


def test_hundred_concurrent_agets(server: servers.Server) -> None:
    """100 concurrent aget long-polls each get exactly one of 100 messages put later."""
    with zoldyq.connect(server.url) as b:
        q = b.queue(qname())
        q.put("start")
        q.get()

        async def main() -> list[Any]:
            waiters = [asyncio.create_task(q.aget(timeout=15)) for _ in range(100)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(q.put_many, list(range(100)))
            return [m.payload for m in await asyncio.gather(*waiters)]

        assert sorted(asyncio.run(main())) == list(range(100))


def test_websocket_found_from_info(server: servers.Server) -> None:
    """The client learns the sidecar's port from GET /info; no URL to configure."""
    with zoldyq.connect(server.url) as b:
        assert b.ws_url == f"ws://127.0.0.1:{server.ws_port}"
        assert b.info()["version"] == zoldyq.__version__
        assert b.max_queues == 200


def test_stream_without_a_sidecar_long_polls(namespace: str) -> None:
    """A server without the WebSocket sidecar is streamed with long-polls, in order."""
    with servers.serve(namespace, ws=False) as srv, zoldyq.connect(srv.url) as b:
        assert b.ws_url is None
        q = b.queue("s")
        q.put_many(list(range(20)))
        assert [m.payload for m in q.stream(timeout=1)] == list(range(20))


def test_connect_defaults_and_bad_urls(monkeypatch: pytest.MonkeyPatch,
                                       local_namespace: str) -> None:
    """No URL: $ZOLDYQ_URL; unknown schemes and a missing engine are clear ConfigErrors."""
    monkeypatch.setenv("ZOLDYQ_URL", f"shm://{local_namespace}")
    with zoldyq.connect() as b:
        assert b.namespace == local_namespace
    with pytest.raises(zoldyq.ConfigError, match=r"^unknown URL 'ftp://x': use shm://NAME"):
        zoldyq.connect("ftp://x")
    if importlib.util.find_spec("zoldyq.redis") is None:
        with pytest.raises(zoldyq.ConfigError, match="the Redis engine is not available"):
            zoldyq.connect("redis://127.0.0.1:1")


def test_unreachable_server_is_backend_unavailable() -> None:
    """A server that is not there raises BackendUnavailable (after retries), never hangs."""
    url = f"http://127.0.0.1:{servers.free_port()}"
    with zoldyq.connect(url, retries=1) as b, pytest.raises(zoldyq.BackendUnavailable):
        b.queue("x").put(1)
