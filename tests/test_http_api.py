"""Every route and status of the HTTP API, end to end against one real gunicorn (2 workers)."""

from __future__ import annotations

import base64
import itertools
import re
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

import zoldyq
import zoldyq.redis
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace
from zoldyq.http.routes import ROUTES

_names = itertools.count()


@pytest.fixture(scope="module", params=["shm", "redis"])
def srv(request: pytest.FixtureRequest) -> Iterator[servers.Server]:
    """gunicorn with 2 workers on each engine (``backend`` shm, or the session's Redis)."""
    ns = unique_namespace()
    backend = request.getfixturevalue("redis_server").url if request.param == "redis" else None
    try:
        with servers.gunicorn(ns, workers=2, log_level="debug", max_queues=40, max_batch=50,
                              max_message_bytes=1024, max_body_bytes=64 << 10,
                              backend=backend) as s:
            s.namespace = ns  # type: ignore[attr-defined]
            s.attach = lambda: zoldyq.redis.connect(backend, ns) if backend \
                else zoldyq.attach(ns)  # type: ignore[attr-defined]
            yield s
    finally:
        if backend:
            zoldyq.redis.destroy(backend, ns)
        else:
            zoldyq.destroy(ns)


@pytest.fixture
def qname() -> str:
    return f"q{next(_names)}"


def error(r: servers.Response, status: int, code: str) -> dict[str, object]:
    assert r.status == status, r
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


# -- enqueue / dequeue ----------------------------------------------------------------------


def test_json_round_trip_has_the_roadmap_shapes(srv: servers.Server, qname: str) -> None:
    """Enqueue answers {queued, queue_name, queue_size, enqueued_at}; dequeue gives the payload."""
    payload = {"email": "user@example.com", "n": [1, 2.5, None, "é"]}
    r = srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": payload})
    assert r.status == 200
    put = r.json()
    assert put == {"queued": True, "queue_name": qname, "queue_size": 1,
                   "enqueued_at": put["enqueued_at"]}
    assert abs(put["enqueued_at"] / 1e6 - time.time()) < 60
    r = srv.call("GET", f"/queues/{qname}/dequeue")
    assert r.status == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"payload": payload, "queue_name": qname,
                        "enqueued_at": put["enqueued_at"], "queue_size": 0}
    assert srv.call("GET", f"/queues/{qname}/dequeue").status == 204


def test_fifo_order_over_many_connections(srv: servers.Server, qname: str) -> None:
    """Messages put through either worker come out in the order they were accepted."""
    for i in range(20):
        assert srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": i}).status == 200
    got = [srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] for _ in range(20)]
    assert got == list(range(20))


def test_any_content_type_but_octets_is_json(srv: servers.Server, qname: str) -> None:
    """curl -d sends a form content type: the body is still read as JSON."""
    r = srv.call("POST", f"/queues/{qname}/enqueue", body=b'{"payload": "x"}',
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status == 200
    assert srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] == "x"


def test_raw_bytes_come_back_raw_with_headers(srv: servers.Server, qname: str) -> None:
    """An application/octet-stream body is stored as-is and returned as the body."""
    data = bytes(range(256)) * 3
    r = srv.call("POST", f"/queues/{qname}/enqueue", body=data,
                 headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200
    assert r.json()["queue_size"] == 1
    r = srv.call("GET", f"/queues/{qname}/dequeue")
    assert r.status == 200
    assert r.body == data
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-zoldyq-queue-name"] == qname
    assert r.headers["x-zoldyq-queue-size"] == "0"
    assert int(r.headers["x-zoldyq-enqueued-at"]) > 0


def test_dequeue_unknown_queue_is_404(srv: servers.Server) -> None:
    body = error(srv.call("GET", "/queues/never-made/dequeue?timeout=1"), 404, "queue_not_found")
    assert body["message"] == "Queue 'never-made' does not exist"


def test_batch_enqueue_and_batch_dequeue(srv: servers.Server, qname: str) -> None:
    """POST /batch queues every payload; ?max=N returns up to N in order, raw ones as base64."""
    r = srv.call("POST", f"/queues/{qname}/batch", json={"payloads": [{"i": i} for i in range(7)]})
    assert r.status == 200
    assert r.json() | {"enqueued_at": 0} == {"queued": True, "queue_name": qname, "count": 7,
                                             "queue_size": 7, "enqueued_at": 0}
    srv.call("POST", f"/queues/{qname}/enqueue", body=b"\x00raw",
             headers={"Content-Type": "application/octet-stream"})
    r = srv.call("GET", f"/queues/{qname}/dequeue?max=5")
    body = r.json()
    assert [m["payload"] for m in body["messages"]] == [{"i": i} for i in range(5)]
    assert body["count"] == 5
    assert body["queue_size"] == 3
    assert body["queue_name"] == qname
    body = srv.call("GET", f"/queues/{qname}/dequeue?max=50").json()
    assert body["count"] == 3
    raw = body["messages"][2]
    assert raw["encoding"] == "base64"
    assert base64.b64decode(raw["payload"]) == b"\x00raw"
    assert srv.call("GET", f"/queues/{qname}/dequeue?max=3").status == 204


def test_full_queue_is_429_and_batches_are_all_or_none(srv: servers.Server, qname: str) -> None:
    assert srv.call("PUT", f"/queues/{qname}", json={"max_messages": 3}).status == 201
    r = srv.call("POST", f"/queues/{qname}/batch", json={"payloads": [1, 2, 3, 4]})
    body = error(r, 429, "queue_full")
    assert body["queue_capacity"] == 3
    assert body["queue_name"] == qname
    assert srv.call("GET", f"/queues/{qname}").json()["size"] == 0
    for i in range(3):
        assert srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": i}).status == 200
    body = error(srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 9}), 429,
                 "queue_full")
    assert body["message"] == f"Queue '{qname}' is at capacity"


def test_message_and_body_limits_are_413(srv: servers.Server, qname: str) -> None:
    """Over max_message_bytes (alone or in a batch): message_too_large; over max_body_bytes:
    refused unread."""
    r = srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": "x" * 2000})
    assert error(r, 413, "message_too_large")["max_message_bytes"] == 1024
    r = srv.call("POST", f"/queues/{qname}/enqueue", body=b"y" * 2000,
                 headers={"Content-Type": "application/octet-stream"})
    error(r, 413, "message_too_large")
    r = srv.call("POST", f"/queues/{qname}/batch", body=b"z" * (65 << 10))
    assert error(r, 413, "body_too_large")["max_body_bytes"] == 64 << 10
    r = srv.call("POST", f"/queues/{qname}/batch", json={"payloads": [1, "x" * 2000]})
    assert error(r, 413, "message_too_large")["max_message_bytes"] == 1024  # the one-pass body
    assert srv.call("GET", f"/queues/{qname}").json()["size"] == 0


def test_oversized_body_is_refused_before_it_is_sent(srv: servers.Server, qname: str) -> None:
    """A Content-Length over the limit gets 413 while the client has sent only the headers."""
    import socket

    host, port = "127.0.0.1", srv.port
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(f"POST /queues/{qname}/enqueue HTTP/1.1\r\nHost: x\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {1 << 30}\r\n\r\n".encode())
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"body_too_large" in head


def _chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for i in range(0, len(body), size):
        yield body[i : i + size]


def test_chunked_bodies(srv: servers.Server, qname: str) -> None:
    """A chunked body is read (enqueued) under the limit and refused past it."""
    import http.client

    def send(path: str, body: bytes) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            conn.request("POST", path, body=_chunked(body), encode_chunked=True,
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    status, _ = send(f"/queues/{qname}/enqueue", b'{"payload": "%s"}' % (b"c" * 900))
    assert status == 200
    assert srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] == "c" * 900
    too_large = b"[" + b"1," * (40 << 10) + b"1]"
    for _ in range(5):  # the server answers 413 and closes mid-upload: the client's send
        try:            # may meet the reset before it reads the answer; ask again
            status, body = send(f"/queues/{qname}/batch", too_large)
            break
        except (BrokenPipeError, ConnectionResetError):
            continue
    assert status == 413
    assert b"body_too_large" in body
    assert srv.call("GET", f"/queues/{qname}/dequeue").status == 204  # nothing of it stored


BAD = [
    ("POST", "/queues/a/enqueue", b"{not json", 400, "bad_json"),
    ("POST", "/queues/a/enqueue", b"", 400, "bad_json"),
    ("POST", "/queues/a/enqueue", b'{"pay": 1}', 400, "missing_payload"),
    ("POST", "/queues/a/enqueue", b"[1, 2]", 400, "missing_payload"),
    ("POST", "/queues/a/batch", b'{"payloads": 3}', 400, "bad_payloads"),
    ("POST", "/queues/a/batch", b'{"payload": [1]}', 400, "missing_payloads"),
    ("POST", "/queues/a/batch", b'{"payloads": [%s]}' % b",".join([b"1"] * 51), 400,
     "batch_too_large"),
    ("POST", "/queues/bad%20name/enqueue", b'{"payload": 1}', 400, "bad_name"),
    ("POST", "/queues/" + "x" * 65 + "/enqueue", b'{"payload": 1}', 400, "bad_name"),
    ("POST", "/queues/%C3%A9/enqueue", b'{"payload": 1}', 400, "bad_name"),
    ("GET", "/queues/a*b/dequeue", None, 400, "bad_name"),
    ("GET", "/queues/a/dequeue?timeout=-1", None, 400, "bad_timeout"),
    ("GET", "/queues/a/dequeue?timeout=31", None, 400, "bad_timeout"),
    ("GET", "/queues/a/dequeue?timeout=abc", None, 400, "bad_timeout"),
    ("GET", "/queues/a/dequeue?timeout=nan", None, 400, "bad_timeout"),
    ("GET", "/queues/a/dequeue?timeout=inf", None, 400, "bad_timeout"),
    ("GET", "/queues/a/dequeue?max=0", None, 400, "bad_max"),
    ("GET", "/queues/a/dequeue?max=51", None, 400, "bad_max"),
    ("GET", "/queues/a/dequeue?max=x", None, 400, "bad_max"),
    ("PUT", "/queues/a", b'{"max_messages": -1}', 400, "bad_caps"),
    ("PUT", "/queues/a", b'{"colour": 1}', 400, "bad_caps"),
    ("PUT", "/queues/a", b'{"max_messages": true}', 400, "bad_caps"),
    ("PUT", "/queues/a", b"[]", 400, "bad_caps"),
    ("PUT", "/queues/a", b"{", 400, "bad_json"),
    ("PUT", "/queues/a", b" \n", 400, "bad_json"),  # no body is no caps; blank is not JSON
    ("DELETE", "/queues/a/enqueue", None, 405, "method_not_allowed"),
    ("GET", "/queues/a/enqueue", None, 405, "method_not_allowed"),
    ("POST", "/health", b"", 405, "method_not_allowed"),
    ("PATCH", "/queues/a", b"", 405, "method_not_allowed"),
    ("GET", "/nowhere", None, 404, "not_found"),
    ("GET", "/queues/a/b/c", None, 404, "not_found"),
    ("POST", "/queues/a/enqueue?x=1", b"\xff\xfe", 400, "bad_json"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD,
                         ids=[f"{m} {p[:40]} {c}" for m, p, _, _, c in BAD])
def test_bad_input_gets_a_json_error_never_a_500(
    srv: servers.Server, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    r = srv.call(method, path, body=body, headers={"Content-Type": "application/json"})
    error(r, status, code)
    assert b"Traceback" not in r.body


def test_bad_content_length_is_400(srv: servers.Server) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"POST /queues/a/enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 12x\r\n\r\n")
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 400"), head


# -- queue management ---------------------------------------------------------------------


def test_queue_management(srv: servers.Server, qname: str) -> None:
    """PUT creates (201, then 200 if the same), 409 on other caps; GET, list, clear, DELETE."""
    r = srv.call("PUT", f"/queues/{qname}", json={"max_messages": 10, "max_message_bytes": 512})
    assert r.status == 201
    info = r.json()
    assert info["created"] is True
    assert info["capacity"] == 10
    assert info["max_message_bytes"] == 512
    assert info["size"] == 0
    r = srv.call("PUT", f"/queues/{qname}", json={"max_messages": 10, "max_message_bytes": 512})
    assert r.status == 200
    assert r.json()["created"] is False
    assert srv.call("PUT", f"/queues/{qname}").status == 200
    error(srv.call("PUT", f"/queues/{qname}", json={"max_messages": 11}), 409, "queue_exists")
    srv.call("POST", f"/queues/{qname}/batch", json={"payloads": [1, 2, 3]})
    info = srv.call("GET", f"/queues/{qname}").json()
    assert info["name"] == qname
    assert info["size"] == 3
    assert info["utilization"] == 0.3
    assert info["enqueued_total"] == 3
    listed = srv.call("GET", "/queues").json()
    assert listed["count"] == len(listed["queues"])
    assert {q["name"]: q["size"] for q in listed["queues"]}[qname] == 3
    assert srv.call("POST", f"/queues/{qname}/clear").json() == {
        "cleared": 3, "queue_name": qname, "queue_size": 0}
    assert srv.call("DELETE", f"/queues/{qname}").json() == {"deleted": True,
                                                              "queue_name": qname}
    error(srv.call("DELETE", f"/queues/{qname}"), 404, "queue_not_found")
    error(srv.call("GET", f"/queues/{qname}"), 404, "queue_not_found")
    error(srv.call("POST", f"/queues/{qname}/clear"), 404, "queue_not_found")
    assert qname not in [q["name"] for q in srv.call("GET", "/queues").json()["queues"]]


def test_too_many_queues_is_507(srv: servers.Server) -> None:
    made = []
    try:
        for i in range(41):
            r = srv.call("POST", f"/queues/many{i}/enqueue", json={"payload": i})
            if r.status != 200:
                break
            made.append(f"many{i}")
        body = error(r, 507, "too_many_queues")
        assert body["max_queues"] == 40
    finally:
        for name in made:
            srv.call("DELETE", f"/queues/{name}")


# -- ops routes ---------------------------------------------------------------------------


def test_health_has_the_roadmap_format(srv: servers.Server, qname: str) -> None:
    srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 1})
    body = srv.call("GET", "/health").json()
    assert body["status"] == "healthy"
    assert body["uptime_seconds"] >= 0
    assert body["total_queues"] >= 1
    q = body["queues"][qname]
    assert set(q) >= {"size", "capacity", "utilization", "enqueued_total", "dequeued_total",
                      "queue_full_count"}
    assert q["size"] == 1
    assert q["enqueued_total"] == 1


def test_metrics_is_prometheus_text(srv: servers.Server, qname: str) -> None:
    srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 1})
    r = srv.call("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert re.search(rb'^zoldyq_queue_size\{[^}]*queue="%s"[^}]*\} 1(\.0)?$' % qname.encode(),
                     r.body, re.M), r.body[:2000]


def test_openapi_describes_every_route(srv: servers.Server) -> None:
    doc = srv.call("GET", "/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for route in ROUTES:
        op = doc["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.name
        assert op["responses"]
        for ref in re.findall(r'"#/components/schemas/(\w+)"', str(op).replace("'", '"')):
            assert ref in doc["components"]["schemas"]
    dequeue = doc["paths"]["/queues/{name}/dequeue"]["get"]["responses"]
    assert {"200", "204", "400", "404"} <= set(dequeue)
    enqueue = doc["paths"]["/queues/{name}/enqueue"]["post"]["responses"]
    assert {"200", "400", "413", "429", "507"} <= set(enqueue)


# -- several processes on one queue ---------------------------------------------------------


def _served_by(srv: servers.Server, method: str, path: str, timeout: float = 5.0) -> int:
    """The worker pid that served a request, from the access log (log_level=debug)."""
    pattern = re.compile(rf"gunicorn\.access\[(\d+)\].*\"{method} {re.escape(path)}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.findall(srv.log())
        if found:
            return int(found[-1])
        time.sleep(0.02)
    raise AssertionError(f"no access line for {method} {path}")


def test_message_crosses_workers_and_wakes_a_long_poll(srv: servers.Server) -> None:
    """A long-poll on one worker is woken by an enqueue through the other, fast."""
    latencies = []
    crossed = 0
    for i in range(12):
        name = f"wake{i}"
        srv.call("PUT", f"/queues/{name}")
        got: list[servers.Response] = []
        t = threading.Thread(target=lambda n=name, out=got: out.append(
            srv.call("GET", f"/queues/{n}/dequeue?timeout=10")))
        t.start()
        deadline = time.monotonic() + 5
        while srv.call("GET", f"/queues/{name}").json()["waiters"] < 1:
            assert time.monotonic() < deadline, "long-poll never parked"
            time.sleep(0.01)
        t0 = time.monotonic()
        r = srv.call("POST", f"/queues/{name}/enqueue", json={"payload": i})
        t.join(5)
        latencies.append(time.monotonic() - t0)
        assert r.status == 200
        assert got[0].json()["payload"] == i
        path = f"/queues/{name}/"
        if _served_by(srv, "GET", path + "dequeue") != _served_by(srv, "POST", path + "enqueue"):
            crossed += 1
        srv.call("DELETE", f"/queues/{name}")
        if crossed >= 3 and i >= 5:
            break
    assert crossed >= 1, "every request landed on one worker"
    assert max(latencies) < 1.0
    assert min(latencies) < 0.05, latencies
    print(f"long-poll wake-up (enqueue request + woken response): median "
          f"{statistics.median(latencies) * 1000:.1f} ms")


def test_local_process_and_http_share_a_queue(srv: servers.Server, qname: str) -> None:
    """The engine API in this process and HTTP clients see the same FIFO."""
    broker = srv.attach()  # type: ignore[attr-defined]
    try:
        q = broker.queue(qname)
        q.put({"from": "local"})
        q.put_bytes(b"local-raw")
        assert srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] == {"from": "local"}
        assert srv.call("GET", f"/queues/{qname}/dequeue").body == b"local-raw"
        srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": {"from": "http"}})
        srv.call("POST", f"/queues/{qname}/enqueue", body=b"\x01",
                 headers={"Content-Type": "application/octet-stream"})
        assert q.get().payload == {"from": "http"}
        assert q.get().payload == b"\x01"
    finally:
        broker.close()


def test_100_long_polls_leave_enqueue_and_health_responsive(srv: servers.Server) -> None:
    """With 100 long-polls outstanding, enqueue and /health still answer fast (no thread each)."""
    import http.client

    name = "parked"
    srv.call("PUT", f"/queues/{name}")
    sent = threading.Semaphore(0)
    results: list[int] = []

    def long_poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            conn.request("GET", f"/queues/{name}/dequeue?timeout=20")
            sent.release()
            results.append(conn.getresponse().status)
        finally:
            conn.close()

    threads = [threading.Thread(target=long_poll) for _ in range(100)]
    for t in threads:
        t.start()
    try:
        for _ in threads:
            assert sent.acquire(timeout=15)
        deadline = time.monotonic() + 15
        while srv.call("GET", f"/queues/{name}").json()["waiters"] < 1:
            assert time.monotonic() < deadline, "no long-poll parked"
            time.sleep(0.02)
        times = []
        for i in range(10):
            t0 = time.monotonic()
            assert srv.call("GET", "/health").status == 200
            assert srv.call("POST", "/queues/other/enqueue", json={"payload": i}).status == 200
            times.append((time.monotonic() - t0) / 2)
        assert statistics.median(times) < 0.1, times
        assert max(times) < 1.0, times
        assert not results, "a long-poll ended early"
    finally:
        srv.call("POST", f"/queues/{name}/batch", json={"payloads": list(range(50))})
        srv.call("POST", f"/queues/{name}/batch", json={"payloads": list(range(50))})
        for t in threads:
            t.join(20)
    assert results == [200] * 100
    srv.call("DELETE", f"/queues/{name}")
    srv.call("DELETE", "/queues/other")
