"""The sidecar next to real gunicorn workers: one set of queues, whichever the transport."""

from __future__ import annotations

import contextlib
import http.client as http_client
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

import zoldyq
from tests.helpers import servers
from tests.helpers.ws import closed_with, poll, sidecar


@pytest.fixture
def broker(namespace: str) -> Iterator[zoldyq.Broker]:
    b = zoldyq.create(namespace, max_messages=100_000, max_bytes=32 << 20)
    try:
        yield b
    finally:
        b.close()


def test_enqueue_on_one_transport_dequeue_on_the_other(namespace: str, broker: zoldyq.Broker
                                                       ) -> None:
    """WS -> HTTP and HTTP -> WS keep strict FIFO, JSON and raw alike."""
    with servers.gunicorn(namespace, workers=2) as http, sidecar(namespace) as ws:
        with connect(ws.url + "/queues/a/enqueue") as c:
            for i in range(50):
                c.send(json.dumps({"payload": {"i": i}}))
            c.send(b"\x01raw")
            assert [json.loads(c.recv(timeout=10))["queue_size"] for _ in range(51)] == list(
                range(1, 52))
        got = [http.call("GET", "/queues/a/dequeue").json()["payload"] for _ in range(50)]
        assert got == [{"i": i} for i in range(50)]
        raw = http.call("GET", "/queues/a/dequeue")
        assert raw.body == b"\x01raw"
        assert raw.headers["content-type"] == "application/octet-stream"

        for i in range(50):
            assert http.call("POST", "/queues/b/enqueue", json={"payload": i}).status == 200
        http.call("POST", "/queues/b/enqueue", body=b"\x02raw",
                  headers={"Content-Type": "application/octet-stream"})
        with connect(ws.url + "/queues/b/dequeue") as c:
            got = [json.loads(c.recv(timeout=10))["payload"] for _ in range(50)]
            assert got == list(range(50))
            assert c.recv(timeout=10) == b"\x02raw"


def _workers(master: int) -> list[int]:
    kids = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return [int(k) for k in kids]


def test_sidecar_survives_kill_9_of_an_http_worker(namespace: str, broker: zoldyq.Broker) -> None:
    """An HTTP worker killed mid-operation does not disturb the streams of the sidecar."""
    with servers.gunicorn(namespace, workers=2) as http, sidecar(namespace) as ws, \
            connect(ws.url + "/queues/mix/dequeue") as consumer:
        stop = threading.Event()
        sent: list[int] = []
        unknown: list[int] = []  # in flight in the killed worker: enqueued or not

        def produce(start: int) -> None:
            for i in itertools.count(start, 2):
                if stop.is_set():
                    return
                try:
                    r = http.call("POST", "/queues/mix/enqueue", json={"payload": i}, timeout=5)
                except (OSError, http_client.HTTPException):
                    unknown.append(i)
                    continue
                assert r.status == 200, r
                sent.append(i)

        producers = [threading.Thread(target=produce, args=(k,)) for k in range(2)]
        for t in producers:
            t.start()
        try:
            poll(lambda: len(sent) >= 200, what="HTTP traffic")
            os.kill(_workers(http.pid)[0], signal.SIGKILL)
            n = len(sent)
            poll(lambda: len(sent) >= n + 200, what="HTTP traffic after the kill")
        finally:
            stop.set()
            for t in producers:
                t.join(30)
        received = []
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(json.loads(consumer.recv(timeout=1))["payload"])
        assert set(sent) <= set(received) <= set(sent) | set(unknown)
        assert len(received) == len(set(received))
        with connect(ws.url + "/queues/mix/enqueue") as c:
            c.send('{"payload": "after"}')
            assert json.loads(c.recv(timeout=10))["queued"] is True
        assert json.loads(consumer.recv(timeout=10))["payload"] == "after"


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except FileNotFoundError:
        return True


def test_serve_restarts_the_sidecar_and_stops_streams_with_1001(namespace: str) -> None:
    """Under ``zoldyq serve``: a killed sidecar comes back; SIGTERM gives streams 1001, exit 0."""
    with servers.serve(namespace, keep_namespace=False) as srv:
        url = f"ws://127.0.0.1:{srv.ws_port}"
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        kids = {int(k) for k in Path(f"/proc/{srv.pid}/task/{srv.pid}/children").read_text()
                .split()}
        sidecars = [k for k in kids
                    if b"workers.ws" in Path(f"/proc/{k}/cmdline").read_bytes()]
        assert len(sidecars) == 1
        os.kill(sidecars[0], signal.SIGKILL)
        poll(lambda: _gone(sidecars[0]), what="the killed sidecar to die")
        deadline = time.monotonic() + 20
        while True:  # the launcher restarts it after a short delay
            try:
                with connect(url + "/queues/s/enqueue", open_timeout=2) as c:
                    c.send('{"payload": "back"}')
                    assert json.loads(c.recv(timeout=10))["queued"] is True
                break
            except (OSError, InvalidHandshake, ConnectionClosed):
                assert time.monotonic() < deadline, srv.log()
                time.sleep(0.1)
        with connect(url + "/queues/s/dequeue") as c:
            assert json.loads(c.recv(timeout=10))["payload"] == "back"
            assert srv.stop() == 0, srv.log()
            assert closed_with(c)[0] == 1001


def test_metrics_count_open_websocket_connections(namespace: str) -> None:
    """zoldyq_websocket_connections on /metrics follows the sidecar's open connections."""
    from tests.helpers.prom import value

    def gauge(srv: servers.Server) -> float:
        return value(srv.call("GET", "/metrics").body.decode(), "zoldyq_websocket_connections")

    with servers.serve(namespace, keep_namespace=False) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        url = f"ws://127.0.0.1:{srv.ws_port}/queues/g/dequeue"
        with connect(url) as first, connect(url) as second:
            assert first.protocol.state.name == second.protocol.state.name == "OPEN"
            poll(lambda: gauge(srv) == 2, what="the gauge to show 2 connections")
        poll(lambda: gauge(srv) == 0, what="the gauge to drop back to 0")
