"""HTTP at the edges (issue 10): bodies cut short, exact JSON, origins, bounded metrics, names.

Each test runs against a real gunicorn of each worker class (one worker, so a
request's effect is visible to the next one).
"""

from __future__ import annotations

import http.client
import socket
import struct
import time
from collections.abc import Iterator

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

BIG = "123456789012345678901234567890"
CORS = "https://app.example"


@pytest.fixture(scope="module", params=["asgi", "gthread"])
def srv(request: pytest.FixtureRequest) -> Iterator[servers.Server]:
    ns = unique_namespace()
    try:
        with servers.gunicorn(ns, workers=1, worker_class=request.param,
                              cors_origins=CORS) as s:
            s.namespace = ns  # type: ignore[attr-defined]
            s.broker = zoldyq.attach(ns)  # type: ignore[attr-defined]
            yield s
            s.broker.close()  # type: ignore[attr-defined]
    finally:
        zoldyq.destroy(ns)


_n = iter(range(10**6))


@pytest.fixture
def qname() -> str:
    return f"e{next(_n)}"


def _size(srv: servers.Server, name: str) -> int:
    b = srv.broker  # type: ignore[attr-defined]
    return len(b.queue(name)) if b.exists(name) else 0


# -- item 2: a chunked body cut short is never stored -------------------------------------


@pytest.mark.parametrize("ending", ["close", "half-close", "reset"])
@pytest.mark.parametrize(("content_type", "sent"), [
    ("application/octet-stream", b"x" * 20),  # 20 of the 30 bytes the client meant
    ("application/json", b'{"payload": 1}'),  # a complete object, but no last chunk
])
def test_chunked_body_cut_short_is_not_stored(srv: servers.Server, qname: str, ending: str,
                                              content_type: str, sent: bytes) -> None:
    """Whatever way the client leaves mid-body, nothing is stored; an answer is a 400."""
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(f"POST /queues/{qname}/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: "
              f"{content_type}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
              + b"%x\r\n%s\r\n" % (len(sent), sent))
    time.sleep(0.2)
    answer = b""
    if ending == "half-close":
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        while b"}" not in answer and (part := s.recv(1000)):  # headers, then the body
            answer += part
    elif ending == "reset":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    time.sleep(0.5)
    assert _size(srv, qname) == 0
    if answer:
        assert answer.startswith(b"HTTP/1.1 400"), answer
        assert b"incomplete_body" in answer
    srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": "after"})
    assert srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] == "after"


def test_a_complete_chunked_body_is_stored(srv: servers.Server, qname: str) -> None:
    """The same request with its last chunk is stored whole."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    conn.request("POST", f"/queues/{qname}/enqueue", body=iter([b'{"payload"', b": 7}"]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert conn.getresponse().status == 200
    conn.close()
    assert srv.call("GET", f"/queues/{qname}/dequeue").json()["payload"] == 7


# -- item 3: JSON numbers are never rewritten -----------------------------------------


def test_numbers_come_back_as_sent(srv: servers.Server, qname: str) -> None:
    """Big integers, trailing zeros, exponents: single, batch and ?max= answers carry them."""
    body = b'{"payload": {"n": %s, "f": 1.10, "e": 1e2, "u": 18446744073709551616}}' % \
        BIG.encode()
    assert srv.call("POST", f"/queues/{qname}/enqueue", body=body).status == 200
    r = srv.call("GET", f"/queues/{qname}/dequeue")
    assert b'{"n": %s, "f": 1.10, "e": 1e2, "u": 18446744073709551616}' % BIG.encode() in r.body
    batch = b'{"payloads": [%s, 2.50, [1e400]]}' % BIG.encode()
    r = srv.call("POST", f"/queues/{qname}/batch", body=batch)
    assert r.status == 400, r  # 1e400 cannot be kept: refused whole, with the reason
    assert r.json()["error"] == "bad_json"
    r = srv.call("POST", f"/queues/{qname}/batch", body=b'{"payloads": [%s, 2.50]}' %
                 BIG.encode())
    assert r.status == 200, r
    r = srv.call("GET", f"/queues/{qname}/dequeue?max=10")
    assert b'"payload":%s,' % BIG.encode() in r.body
    assert b'"payload":2.50,' in r.body
    assert r.json()["count"] == 2


def test_deep_nesting_is_kept_or_refused_with_a_listed_code(srv: servers.Server,
                                                            qname: str) -> None:
    """300 levels are stored as sent; past the parser's 1024, 400 bad_json (a listed code)."""
    deep = b"[" * 300 + b"]" * 300
    assert srv.call("POST", f"/queues/{qname}/enqueue",
                    body=b'{"payload": %s}' % deep).status == 200
    assert srv.call("GET", f"/queues/{qname}/dequeue").body.startswith(b'{"payload":' + deep)
    r = srv.call("POST", f"/queues/{qname}/enqueue",
                 body=b'{"payload": %s}' % (b"[" * 2000 + b"]" * 2000))
    assert r.status == 400
    assert r.json()["error"] == "bad_json"
    listed = srv.call("GET", "/openapi.json").json()
    assert "`bad_json`" in listed["paths"]["/queues/{name}/enqueue"]["post"]["responses"][
        "400"]["description"]


# -- item 22: media types and names ---------------------------------------------------


@pytest.mark.parametrize("content_type", ["Application/Octet-Stream",
                                          "APPLICATION/OCTET-STREAM; charset=binary"])
def test_media_types_are_case_insensitive(srv: servers.Server, qname: str,
                                          content_type: str) -> None:
    """Any spelling of application/octet-stream stores raw bytes, not JSON."""
    r = srv.call("POST", f"/queues/{qname}/enqueue", body=b"\x00raw",
                 headers={"Content-Type": content_type})
    assert r.status == 200, r
    r = srv.call("GET", f"/queues/{qname}/dequeue")
    assert (r.headers["content-type"], r.body) == ("application/octet-stream", b"\x00raw")


@pytest.mark.parametrize("segment", ["%2e", "%2e%2e", "%2E%2E"])
def test_dot_names_are_invalid(srv: servers.Server, segment: str) -> None:
    """``.`` and ``..`` (reachable only percent-encoded) are not queue names: 400 bad_name."""
    r = srv.call("POST", f"/queues/{segment}/enqueue", json={"payload": 1})
    assert r.status == 400, r
    assert r.json()["error"] == "bad_name"


# -- item 7: origins ------------------------------------------------------------------


def test_foreign_pages_are_refused_even_for_simple_requests(srv: servers.Server,
                                                            qname: str) -> None:
    """A text/plain POST from another site (no preflight) gets 403 and stores nothing."""
    for origin in ("https://evil.example", "null"):
        r = srv.call("POST", f"/queues/{qname}/enqueue", body=b'{"payload": "x"}',
                     headers={"Origin": origin, "Content-Type": "text/plain"})
        assert r.status == 403, r
        assert r.json()["error"] == "forbidden_origin"
        assert srv.call("GET", f"/queues/{qname}/dequeue",
                        headers={"Origin": origin}).status == 403
    assert _size(srv, qname) == 0
    own = f"http://127.0.0.1:{srv.port}"
    for headers in ({}, {"Origin": own}):  # curl, and the server's own pages
        assert srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 1},
                        headers=headers).status == 200


def test_configured_origins_get_real_cors(srv: servers.Server, qname: str) -> None:
    """ZOLDYQ_CORS_ORIGINS: the preflight is answered and responses carry the CORS headers."""
    r = srv.call("OPTIONS", f"/queues/{qname}/enqueue", headers={
        "Origin": CORS, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert r.status == 200, r
    assert r.headers["access-control-allow-origin"] == CORS
    assert "POST" in r.headers["access-control-allow-methods"]
    r = srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 1},
                 headers={"Origin": CORS})
    assert r.status == 200
    assert r.headers["access-control-allow-origin"] == CORS
    r = srv.call("OPTIONS", f"/queues/{qname}/enqueue", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


# -- item 9: bounded metric labels ----------------------------------------------------


def test_made_up_methods_cannot_blind_the_metrics(srv: servers.Server, qname: str) -> None:
    """1100 requests with invented methods count as one ``other`` series; a 429 still shows."""
    for i in range(1100):
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request(f"M{i:04d}X", "/queues")
        conn.getresponse().read()
        conn.close()
    srv.call("PUT", f"/queues/{qname}", json={"max_messages": 1})
    srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 1})
    assert srv.call("POST", f"/queues/{qname}/enqueue", json={"payload": 2}).status == 429
    text = srv.call("GET", "/metrics").body.decode()
    lines = [line for line in text.splitlines() if line.startswith("zoldyq_http_requests_total")]
    assert any('method="other"' in line for line in lines)
    assert not any('method="M0' in line for line in lines)
    assert any('"429"' in line and 'route="enqueue"' in line for line in lines), lines
