"""Reliable delivery over WebSocket: leased streams with credit, settle frames, delayed
enqueue frames, and streams that close holding messages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import zoldyq
from tests.helpers.ws import closed_with, poll, sidecar


@pytest.fixture
def broker(namespace: str) -> Iterator[zoldyq.Broker]:
    b = zoldyq.create(namespace, max_bytes=4 << 20, max_message_bytes=4096)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def ws(namespace: str, broker: zoldyq.Broker) -> Iterator[str]:
    with sidecar(namespace) as srv:
        yield srv.url


def recv_json(c, timeout: float = 10.0) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return json.loads(c.recv(timeout=timeout))


def test_leased_stream_keeps_at_most_prefetch_unacked(ws: str, broker: zoldyq.Broker) -> None:
    """At most `prefetch` unacked messages are in flight; each ack lets one more through."""
    q = broker.queue("jobs")
    q.put_many(list(range(10)))
    with connect(ws + "/queues/jobs/dequeue?lease=30&prefetch=3") as c:
        first = [recv_json(c) for _ in range(3)]
        assert [m["payload"] for m in first] == [0, 1, 2]
        assert all(m["delivery_count"] == 1 and m["lease_id"] for m in first)
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.3)  # no credit left
        assert q.stats()["inflight"] == 3
        c.send(json.dumps({"ack": first[0]["lease_id"]}))
        assert recv_json(c)["payload"] == 3
        c.send(json.dumps({"extend": first[1]["lease_id"], "lease": 60}))
        answer = recv_json(c)
        assert answer["extended"] == first[1]["lease_id"]
        assert answer["lease_expires_at"] > first[1]["lease_expires_at"]  # type: ignore[operator]
        c.send(json.dumps({"nack": first[2]["lease_id"]}))
        again = recv_json(c)
        assert (again["payload"], again["delivery_count"]) == (2, 2)  # back at the head
        c.send(json.dumps({"ack": "0.0.0"}))
        assert recv_json(c)["error"] == "lease_expired"
        c.send("nonsense")
        assert recv_json(c)["error"] == "bad_request"
    assert q.stats()["acked_total"] == 1


def test_closing_a_leased_stream_gives_its_leases_back_at_once(ws: str,
                                                              broker: zoldyq.Broker) -> None:
    """A leased consumer that disconnects: its unacked messages are ready again at once."""
    q = broker.queue("jobs")
    q.put_many(["a", "b", "c"])
    with connect(ws + "/queues/jobs/dequeue?lease=300&prefetch=2") as c:
        assert [recv_json(c)["payload"] for _ in range(2)] == ["a", "b"]
    poll(lambda: q.stats()["inflight"] == 0, timeout=2, what="the leases to come back")
    assert [m.payload for m in q.get_many(10)] == ["a", "b", "c"]


CLIENT = """
import sys
from websockets.sync.client import connect
c = connect(sys.argv[1])
print("connected", flush=True)
while True:
    print(c.recv(), flush=True)
"""


def test_a_killed_leased_consumer_is_redelivered_within_a_second(
        ws: str, broker: zoldyq.Broker) -> None:
    """kill -9 of a leased WS consumer mid-stream: its unacked messages come back within 1 s."""
    q = broker.queue("jobs")
    p = subprocess.Popen([sys.executable, "-c", CLIENT,
                          ws + "/queues/jobs/dequeue?lease=300&prefetch=5"],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        assert p.stdout.readline() == "connected\n"
        q.put_many(list(range(5)))
        got = [json.loads(p.stdout.readline())["payload"] for _ in range(5)]
        assert got == list(range(5))
        p.kill()
        p.wait(10)
        t0 = time.monotonic()
        poll(lambda: q.stats()["inflight"] == 0, timeout=5, what="the leases to come back")
        assert time.monotonic() - t0 < 1.0
    finally:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    back = q.get_many(10)
    assert [m.payload for m in back] == list(range(5))
    assert all(m.delivery_count == 2 for m in back)


def test_delayed_enqueue_frames(ws: str, broker: zoldyq.Broker) -> None:
    """Enqueue frames with delay/deliver_at are answered with deliver_at and hidden until due."""
    q = broker.queue("later")
    with connect(ws + "/queues/later/enqueue") as c:
        c.send(json.dumps({"payload": "soon", "delay": 0.3}))
        answer = recv_json(c)
        assert answer["queued"] is True
        assert answer["deliver_at"] > time.time_ns() // 1000  # type: ignore[operator]
        c.send(json.dumps({"payload": "now"}))
        assert "deliver_at" not in recv_json(c)
        c.send(json.dumps({"payload": "x", "delay": -1}))
        assert recv_json(c)["error"] == "bad_request"
    assert [m.payload for m in q.get_many(10)] == ["now"]
    m = q.get(timeout=2)
    assert m is not None
    assert m.payload == "soon"


@pytest.mark.parametrize("query", ["lease=0", "lease=x", "lease=5&prefetch=0"])
def test_bad_lease_parameters_close_with_1008(ws: str, query: str) -> None:
    """A leased stream with bad parameters is refused with a reason, not served."""
    with connect(ws + f"/queues/jobs/dequeue?{query}") as c:
        code, reason = closed_with(c)
    assert code == 1008
    assert reason is not None
    assert reason.startswith("bad_request")


def test_a_plain_stream_that_closes_keeps_the_rest(ws: str, broker: zoldyq.Broker) -> None:
    """A plain consumer that leaves: what it had not been sent stays in the queue, in order."""
    q = broker.queue("jobs")
    with connect(ws + "/queues/jobs/dequeue") as c:
        q.put_many(list(range(3)))
        assert [recv_json(c)["payload"] for _ in range(3)] == [0, 1, 2]
    time.sleep(0.2)
    q.put_many(list(range(3, 50)))
    time.sleep(0.3)
    assert [m.payload for m in q.get_many(100)] == list(range(3, 50))
    with pytest.raises(ConnectionClosed):
        c.recv(timeout=0.1)
