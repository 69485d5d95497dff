"""Resource limits (issue 6, item 3): each limit answers cleanly, everyone else is still served.

Too many queues (507), a crowd of idle and half-sent HTTP connections,
slowloris request bodies (asgi worker), and WebSocket consumers up to
``ws_max_connections`` (the next one gets 503). ``/dev/shm`` too small is in
tests/test_storage.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import InvalidStatus

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

SERVED_WITHIN = 1.0  # seconds a bystander's request may take while a limit is being hit


@pytest.fixture
def ns() -> Iterator[str]:
    name = unique_namespace()
    try:
        yield name
    finally:
        zoldyq.destroy(name)


def _served(srv: servers.Server, queue: str = "bystander") -> None:
    """A bystander's enqueue, dequeue and /health, each answered promptly and correctly."""
    for method, path, body in (("POST", f"/queues/{queue}/enqueue", {"payload": "hi"}),
                               ("GET", f"/queues/{queue}/dequeue", None),
                               ("GET", "/health", None)):
        t0 = time.monotonic()
        r = srv.call(method, path, json=body, timeout=10)
        assert r.status == 200, (path, r)
        assert time.monotonic() - t0 < SERVED_WITHIN, (path, time.monotonic() - t0)
    assert r.json()["status"] == "healthy"


def test_too_many_queues(ns: str) -> None:
    with servers.gunicorn(ns, workers=2, max_queues=4) as srv:
        for i in range(4):
            assert srv.call("POST", f"/queues/q{i}/enqueue", json={"payload": i}).status == 200
        for method, path, body in (("POST", "/queues/q4/enqueue", {"payload": 1}),
                                   ("POST", "/queues/q4/batch", {"payloads": [1]}),
                                   ("PUT", "/queues/q4", {})):
            r = srv.call(method, path, json=body)
            assert r.status == 507, r
            assert r.json()["error"] == "too_many_queues"
            assert "4" in r.json()["message"]
        # existing queues keep working, nothing was half-created
        assert srv.call("GET", "/queues/q0/dequeue").json()["payload"] == 0
        assert srv.call("POST", "/queues/q0/enqueue", json={"payload": "again"}).status == 200
        assert srv.call("GET", "/queues").json()["count"] == 4
        assert srv.call("GET", "/queues/q4").status == 404
        assert srv.call("GET", "/health").status == 200
        # a freed slot is usable at once
        assert srv.call("DELETE", "/queues/q3").status == 200
        assert srv.call("POST", "/queues/q4/enqueue", json={"payload": 4}).status == 200


def _crowd(port: int, n: int, first_bytes: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        if first_bytes:
            s.sendall(first_bytes)
        socks.append(s)
    return socks


def test_many_idle_and_half_sent_connections(ns: str) -> None:
    """1 500 connections that send nothing, or half a request, never complete it."""
    with servers.gunicorn(ns, workers=2) as srv:
        socks = _crowd(srv.port, 500, b"") + _crowd(srv.port, 500, b"GET /queues HTT") \
            + _crowd(srv.port, 500, b"POST /queues/a/enqueue HTTP/1.1\r\nHost: x\r\n"
                                    b"Content-Length: 100\r\n\r\n{")
        try:
            _served(srv)
        finally:
            for s in socks:
                s.close()
        _served(srv)
        assert "Traceback" not in srv.log()


def test_slowloris_bodies_do_not_block_others(ns: str) -> None:
    """Clients dribbling their body a byte at a time hold no worker: others are served,
    and each slow enqueue is still stored whole when it completes."""
    body = json.dumps({"payload": "s" * 40}).encode()
    stop = threading.Event()
    results: list[int] = []

    def slow_client(srv: servers.Server) -> None:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
            s.sendall(b"POST /queues/slow/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: "
                      b"application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
            for i in range(len(body)):
                s.sendall(body[i:i + 1])
                if stop.wait(0.02):
                    return
            results.append(int(s.recv(100).split()[1]))

    with servers.gunicorn(ns, workers=2) as srv:  # asgi: a body read is a coroutine
        threads = [threading.Thread(target=slow_client, args=(srv,)) for _ in range(100)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.3)  # let every slow client get its headers in
            for _ in range(3):
                _served(srv)
        finally:
            for t in threads:
                t.join(60)
        assert results == [200] * 100
        assert srv.call("GET", "/queues/slow").json()["size"] == 100


async def _ws_crowd(url: str, n: int) -> list:
    conns = []
    for i in range(0, n, 50):
        conns += await asyncio.gather(*(aconnect(f"{url}/queues/idle{j % 20}/dequeue",
                                                 open_timeout=30, ping_interval=None)
                                        for j in range(i, min(n, i + 50))))
    return conns


def test_ws_consumers_up_to_the_configured_maximum(ns: str) -> None:
    """ws_max_connections idle dequeue streams: the next handshake gets 503 JSON, HTTP
    and the open streams are still served, and a closed stream frees its slot."""
    limit = 1000
    with servers.serve(ns, ws_max_connections=limit, workers=2) as srv:
        url = f"ws://127.0.0.1:{srv.ws_port}"
        srv.wait_ready(servers.tcp_ready(srv.ws_port))  # the sidecar starts after HTTP

        async def scenario() -> None:
            conns = await _ws_crowd(url, limit)
            try:
                with pytest.raises(InvalidStatus) as info:
                    await aconnect(f"{url}/queues/late/dequeue", open_timeout=30)
                assert info.value.response.status_code == 503
                assert json.loads(info.value.response.body)["error"] == "too_many_connections"
                # the crowd is still served: a message reaches one of its streams at once
                t0 = time.monotonic()
                r = await asyncio.to_thread(srv.call, "POST", "/queues/idle7/enqueue",
                                            json={"payload": "wake"})
                assert r.status == 200
                # 50 streams share idle7: whichever the sidecar picks gets it
                waits = [asyncio.ensure_future(c.recv()) for c in conns[7::20]]
                done, pending = await asyncio.wait(waits, timeout=10,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for w in pending:
                    w.cancel()
                assert len(done) == 1
                assert json.loads(done.pop().result())["payload"] == "wake"
                assert time.monotonic() - t0 < SERVED_WITHIN * 2
                await asyncio.to_thread(_served, srv)
                await conns.pop().close()
                deadline = time.monotonic() + 10
                while True:  # the sidecar notices the close, then has a slot again
                    try:
                        conns.append(await aconnect(f"{url}/queues/late/dequeue"))
                        break
                    except InvalidStatus:
                        assert time.monotonic() < deadline, "the freed slot never came back"
                        await asyncio.sleep(0.05)
            finally:
                await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

        asyncio.run(scenario())
        assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker_class", ["asgi", "gthread"])
def test_a_body_cut_short_is_never_stored(ns: str, worker_class: str) -> None:
    """A client gone mid-body leaves the server a short read: never enqueued, never a 200."""
    with servers.gunicorn(ns, workers=1, worker_class=worker_class) as srv:
        for content_type in (b"application/octet-stream", b"application/json"):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"POST /queues/cut/enqueue HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n"
                          b"Content-Length: 100\r\n\r\n" % content_type + b'{"payload": 1}')
                s.shutdown(socket.SHUT_WR)
                answer = s.recv(4096)
            # asgi treats the half-closed client as gone and sends nothing; gthread a 400
            assert answer == b"" or answer.startswith(b"HTTP/1.1 400"), answer
        assert srv.call("GET", "/queues/cut").status == 404
        _served(srv, "cut")
