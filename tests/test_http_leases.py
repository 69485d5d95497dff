"""Reliable delivery over HTTP (asgi and gthread): lease, ack, nack, extend, delay, dead
letters, redrive, peek, and long-polls whose client gave up."""

from __future__ import annotations

import http.client
import itertools
import socket
import time
from collections.abc import Iterator

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

_names = itertools.count()


@pytest.fixture(scope="module", params=["asgi", "gthread"])
def srv(request: pytest.FixtureRequest) -> Iterator[servers.Server]:
    ns = unique_namespace()
    try:
        with servers.gunicorn(ns, workers=2, worker_class=request.param, max_queues=40,
                              max_batch=200) as s:
            s.namespace = ns  # type: ignore[attr-defined]
            yield s
    finally:
        zoldyq.destroy(ns)


@pytest.fixture
def qname() -> str:
    return f"l{next(_names)}"


def error(r: servers.Response, status: int, code: str) -> None:
    assert r.status == status, r
    assert r.json()["error"] == code, r


def put(srv: servers.Server, q: str, *payloads: object) -> None:
    r = srv.call("POST", f"/queues/{q}/batch", json={"payloads": list(payloads)})
    assert r.status == 200, r


def test_lease_ack_and_409(srv: servers.Server, qname: str) -> None:
    """dequeue?lease adds lease_id, delivery_count, lease_expires_at; ack is 200 once, then 409."""
    put(srv, qname, "a", "b")
    r = srv.call("GET", f"/queues/{qname}/dequeue?lease=30")
    body = r.json()
    assert body["payload"] == "a"
    assert body["delivery_count"] == 1
    assert body["lease_expires_at"] > time.time_ns() // 1000 + 29_000_000
    info = srv.call("GET", f"/queues/{qname}").json()
    assert (info["size"], info["inflight"]) == (1, 1)
    r = srv.call("POST", f"/queues/{qname}/ack", json={"lease_id": body["lease_id"]})
    assert r.json() == {"acked": 1, "queue_name": qname}
    error(srv.call("POST", f"/queues/{qname}/ack", json={"lease_id": body["lease_id"]}),
          409, "lease_expired")
    assert srv.call("GET", f"/queues/{qname}").json()["acked_total"] == 1


def test_batch_lease_and_batched_ack(srv: servers.Server, qname: str) -> None:
    """dequeue?lease&max gives each message its lease; lease_ids acks them in one call."""
    put(srv, qname, *range(5))
    msgs = srv.call("GET", f"/queues/{qname}/dequeue?lease=30&max=10").json()["messages"]
    assert [m["payload"] for m in msgs] == list(range(5))
    ids = [m["lease_id"] for m in msgs]
    r = srv.call("POST", f"/queues/{qname}/ack", json={"lease_ids": [*ids, "0.0.0"]})
    assert r.json() == {"acked": 5, "not_held": ["0.0.0"], "queue_name": qname}


def test_an_ack_naming_both_fields_is_refused_and_acks_nothing(
        srv: servers.Server, qname: str) -> None:
    """{"lease_id", "lease_ids"} is ambiguous: 400, and both leases are still held."""
    put(srv, qname, "a", "b")
    ids = [m["lease_id"] for m in
           srv.call("GET", f"/queues/{qname}/dequeue?lease=30&max=2").json()["messages"]]
    for body in ({"lease_id": ids[0], "lease_ids": ids[1:]}, {"lease_id": "", "lease_ids": []}):
        error(srv.call("POST", f"/queues/{qname}/ack", json=body), 400, "bad_lease")
    assert srv.call("GET", f"/queues/{qname}").json()["inflight"] == 2
    r = srv.call("POST", f"/queues/{qname}/ack", json={"lease_ids": ids})
    assert r.json() == {"acked": 2, "not_held": [], "queue_name": qname}


def test_nack_extend_dead_letter_redrive_and_peek(srv: servers.Server, qname: str) -> None:
    """nack gives back at the head; past max_deliveries it is dead-lettered; redrive and
    peek work on the DLQ; extend moves the deadline; unknown leases are 409."""
    r = srv.call("PUT", f"/queues/{qname}", json={"max_deliveries": 2})
    assert r.status == 201, r
    put(srv, qname, "a", "b")
    first = srv.call("GET", f"/queues/{qname}/dequeue?lease=30").json()
    r = srv.call("POST", f"/queues/{qname}/extend", json={"lease_id": first["lease_id"],
                                                           "lease": 60})
    assert r.json()["lease_expires_at"] > first["lease_expires_at"]
    r = srv.call("POST", f"/queues/{qname}/nack", json={"lease_id": first["lease_id"]})
    assert r.json() == {"nacked": 1, "queue_name": qname}
    again = srv.call("GET", f"/queues/{qname}/dequeue?lease=30").json()
    assert (again["payload"], again["delivery_count"]) == ("a", 2)
    r = srv.call("POST", f"/queues/{qname}/nack", json={"lease_id": again["lease_id"],
                                                         "delay": 0})
    assert r.json() == {"nacked": 1, "queue_name": qname, "dead_lettered": True,
                        "dead_letter_queue": f"{qname}.dlq"}
    peek = srv.call("GET", f"/queues/{qname}.dlq/peek?max=10").json()
    assert [m["payload"] for m in peek["messages"]] == ["a"]
    assert srv.call("GET", f"/queues/{qname}").json()["dead_lettered_total"] == 1
    r = srv.call("POST", f"/queues/{qname}.dlq/redrive")
    assert r.json() == {"redriven": 1, "queue_name": f"{qname}.dlq"}
    peek = srv.call("GET", f"/queues/{qname}/peek").json()
    assert [m["payload"] for m in peek["messages"]] == ["a", "b"]
    for route, body in (("ack", {"lease_id": "1.2.3"}), ("nack", {"lease_id": "1.2.3"}),
                        ("extend", {"lease_id": "1.2.3", "lease": 5})):
        error(srv.call("POST", f"/queues/{qname}/{route}", json=body), 409, "lease_expired")


def test_delayed_enqueue(srv: servers.Server, qname: str) -> None:
    """delay/deliver_at on enqueue and batch: answered with deliver_at, invisible until due."""
    r = srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": "later", "delay": 0.5})
    at = r.json()["deliver_at"]
    assert at > time.time_ns() // 1000
    r = srv.call("POST", f"/queues/{qname}/batch", json={"payloads": [1, 2], "deliver_at": at})
    assert r.json()["deliver_at"] == at
    assert srv.call("GET", f"/queues/{qname}/dequeue").status == 204
    assert srv.call("GET", f"/queues/{qname}").json()["delayed"] == 3
    r = srv.call("GET", f"/queues/{qname}/dequeue?timeout=5&max=10")
    assert [m["payload"] for m in r.json()["messages"]] == ["later", 1, 2]
    assert time.time_ns() // 1000 >= at
    r = srv.call("POST", f"/queues/{qname}/enqueue?delay=0.1", body=b"raw",
                 headers={"Content-Type": "application/octet-stream"})
    assert r.json()["deliver_at"] > 0


def test_a_leased_batch_mixes_raw_and_json_and_acks_as_one(
        srv: servers.Server, qname: str) -> None:
    """dequeue?max&lease: every message carries its lease, a raw one in base64 as in a plain
    batch; one ack with lease_ids removes them all, and names the ones not held."""
    put(srv, qname, {"n": 1})
    r = srv.call("POST", f"/queues/{qname}/enqueue", body=b"\x00raw",
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r
    put(srv, qname, [2])
    msgs = srv.call("GET", f"/queues/{qname}/dequeue?max=10&lease=30").json()["messages"]
    assert [m["payload"] for m in msgs] == [{"n": 1}, "AHJhdw==", [2]]
    assert [m.get("encoding") for m in msgs] == [None, "base64", None]
    assert all(m["delivery_count"] == 1 and m["lease_expires_at"] > 0 for m in msgs)
    ids = [m["lease_id"] for m in msgs]
    assert len(set(ids)) == 3
    r = srv.call("POST", f"/queues/{qname}/ack", json={"lease_ids": [*ids, ids[0]]})
    assert r.json() == {"acked": 3, "not_held": [ids[0]], "queue_name": qname}
    info = srv.call("GET", f"/queues/{qname}").json()
    assert (info["size"], info["inflight"], info["acked_total"]) == (0, 0, 3)


@pytest.mark.parametrize(("method", "path", "body", "code"), [
    ("GET", "/dequeue?lease=0", None, "bad_lease"),
    ("GET", "/dequeue?lease=abc", None, "bad_lease"),
    ("GET", "/dequeue?lease=1e9", None, "bad_lease"),
    ("POST", "/ack", {}, "missing_lease_id"),
    ("POST", "/ack", {"lease_id": 5}, "bad_lease"),
    ("POST", "/ack", {"lease_ids": "x"}, "bad_lease"),
    ("POST", "/ack", {"lease_ids": ["1.2.3", 5]}, "bad_lease"),
    ("POST", "/ack", {"lease_ids": ["1.2.3", ""]}, "bad_lease"),
    ("POST", "/ack", {"lease_ids": ["1" * 65]}, "bad_lease"),
    ("POST", "/nack", {"lease_id": "a", "delay": -1}, "bad_delay"),
    ("POST", "/extend", {"lease_id": "a"}, "bad_lease"),
    ("POST", "/extend", {"lease_id": "a", "lease": True}, "bad_lease"),
    ("POST", "/enqueue", {"payload": 1, "delay": "soon"}, "bad_delay"),
    ("POST", "/enqueue", {"payload": 1, "deliver_at": None}, "bad_delay"),
    ("POST", "/batch", {"payloads": [1], "deliver_at": -5}, "bad_delay"),
    # a body's numbers are JSON numbers (the schema's): "3" is a client's bug, not 3
    ("POST", "/enqueue", {"payload": 1, "deliver_at": "3", "delay": 1}, "bad_delay"),
    ("POST", "/batch", {"payloads": [1], "delay": "3"}, "bad_delay"),
    ("POST", "/nack", {"lease_id": "a", "delay": "0"}, "bad_delay"),
    ("POST", "/extend", {"lease_id": "a", "lease": "30"}, "bad_lease"),
    ("PUT", "", {"max_deliveries": 0}, "bad_caps"),
    ("PUT", "", {"dead_letter_queue": 7}, "bad_caps"),
])
def test_bad_lease_input_is_400(srv: servers.Server, qname: str, method: str, path: str,
                                body: object, code: str) -> None:
    """Bad lease, delay and dead-letter input gets a JSON 400, never a 500."""
    put(srv, qname, "x")
    error(srv.call(method, f"/queues/{qname}{path}", json=body), 400, code)


def _give_up(srv: servers.Server, path: str, after: float = 1.0) -> None:
    """Send a long-poll and close the connection after ``after`` s without reading."""
    host, port = srv.url.rsplit("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=after)
    conn.request("GET", path)
    with pytest.raises((TimeoutError, socket.timeout)):
        conn.getresponse()
    conn.close()


@pytest.mark.parametrize("query", ["timeout=10", "timeout=10&max=5", "timeout=10&lease=30"])
def test_an_abandoned_long_poll_loses_nothing(srv: servers.Server, qname: str,
                                              query: str) -> None:
    """A client that gives up on a long-poll: the messages that arrive later are not taken
    by its dead waiter (or are put back at the head, in order)."""
    srv.call("PUT", f"/queues/{qname}")
    for _ in range(3):
        _give_up(srv, f"/queues/{qname}/dequeue?{query}")
    put(srv, qname, 1, 2)
    time.sleep(0.2)
    put(srv, qname, 3)
    deadline = time.monotonic() + 5
    while srv.call("GET", f"/queues/{qname}").json()["waiters"] and time.monotonic() < deadline:
        time.sleep(0.1)
    info = srv.call("GET", f"/queues/{qname}").json()
    assert info["waiters"] == 0  # the dead waiters are gone
    assert (info["size"], info["inflight"]) == (3, 0)
    r = srv.call("GET", f"/queues/{qname}/dequeue?max=10")
    assert [m["payload"] for m in r.json()["messages"]] == [1, 2, 3]
