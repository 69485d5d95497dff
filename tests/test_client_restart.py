"""A streaming HTTP client outlives a restart of its server and loses nothing acknowledged."""

from __future__ import annotations

import threading
import time
from typing import Any

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace


def start(ns: str, port: int, ws_port: int) -> servers.Server:
    env = servers.settings_env(ns, port=port, ws_port=ws_port, keep_namespace=True, workers=1)
    srv = servers.Server("zoldyq-serve", [servers.PYTHON, "-m", "zoldyq.cli", "serve"], env,
                         f"http://127.0.0.1:{port}")
    srv.ws_port = ws_port
    try:
        srv.wait_ready(servers.http_ready(srv.url))
        srv.wait_ready(servers.tcp_ready(ws_port))
    except BaseException:
        srv.close()
        raise
    return srv


def wait_for(cond: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_stream_reconnects_across_a_server_restart() -> None:
    """Messages put before, during (locally) and after a restart all reach the stream,
    once each and in order; the stream reconnects by itself."""
    ns = unique_namespace()
    port, ws_port = servers.free_port(), servers.free_port()
    srv = start(ns, port, ws_port)
    got: list[Any] = []
    try:
        consumer = zoldyq.connect(srv.url, ws_url=f"ws://127.0.0.1:{ws_port}")
        producer = zoldyq.connect(srv.url)
        producer.queue("jobs").put("first")

        def consume() -> None:
            got.extend(m.payload for m in consumer.queue("jobs").stream(timeout=30))

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        producer.queue("jobs").put_many(list(range(100)))
        wait_for(lambda: len(got) == 101)
        assert srv.stop() == 0
        srv.close()
        with zoldyq.attach(ns) as local:  # the server is down; the namespace is kept
            local.queue("jobs").put_many(list(range(100, 200)))
        srv = start(ns, port, ws_port)
        producer.queue("jobs").put_many(list(range(200, 300)))
        wait_for(lambda: len(got) == 301)
        consumer.interrupt()
        t.join(10)
        producer.close()
        consumer.close()
    finally:
        srv.close()
        zoldyq.destroy(ns)
    assert got == ["first", *range(300)]
