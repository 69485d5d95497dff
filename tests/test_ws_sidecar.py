"""The WebSocket sidecar end to end: a real ``python -m workers.ws`` and real clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import zoldyq
import zoldyq.redis
from tests.helpers import servers
from tests.helpers.ws import closed_with, poll, sidecar

PAD = "x" * 80  # ~100-byte messages


BOTH_ENGINES = pytest.mark.parametrize("broker", ["shm", "redis"], indirect=True)


@pytest.fixture
def broker(request: pytest.FixtureRequest, namespace: str) -> Iterator[zoldyq.Broker]:
    """The test's namespace on shm, or on the session's Redis (``BOTH_ENGINES``)."""
    caps = {"max_messages": 100_000, "max_bytes": 32 << 20, "max_message_bytes": 4096}
    if getattr(request, "param", "shm") == "redis":
        b: Any = zoldyq.redis.connect(request.getfixturevalue("redis_url"), namespace, **caps)
    else:
        b = zoldyq.create(namespace, **caps)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def ws(namespace: str, broker: zoldyq.Broker) -> Iterator[str]:
    """The URL of a sidecar with default settings on the ``broker`` namespace."""
    with sidecar(namespace, backend=getattr(broker, "url", None)) as srv:
        yield srv.url


# -- enqueue --------------------------------------------------------------------------


@BOTH_ENGINES
def test_pipelined_frames_are_answered_in_order(ws: str, broker: zoldyq.Broker) -> None:
    """Every frame gets its answer in order; bad frames get error frames and the stream goes on."""
    frames: list[str | bytes] = []
    for i in range(300):
        if i % 50 == 7:
            frames.append("not json")
        elif i % 50 == 9:
            frames.append('{"no_payload": 1}')
        elif i % 50 == 11:
            frames.append(b"raw-%d" % i)
        else:
            frames.append(json.dumps({"payload": {"i": i}}))
    with connect(ws + "/queues/jobs/enqueue") as c:
        for f in frames:
            c.send(f)
        answers = [json.loads(c.recv(timeout=10)) for _ in frames]
    sizes = []
    for f, a in zip(frames, answers, strict=True):
        if f == "not json":
            assert a["error"] == "bad_request"
            assert a["message"].startswith("frame is not valid JSON")
        elif f == '{"no_payload": 1}':
            assert a == {"error": "bad_request",
                         "message": 'a text frame must be a JSON object {"payload": <value>}'}
        else:
            assert a["queued"] is True
            assert a["queue_name"] == "jobs"
            assert a["enqueued_at"] > 1.6e15
            sizes.append(a["queue_size"])
    assert sizes == list(range(1, len(sizes) + 1))
    got = broker.queue("jobs").get_many(1000)
    stored = [m.payload for m in got]
    expected = [f if isinstance(f, bytes) else json.loads(f)["payload"]
                for f in frames if f not in ("not json", '{"no_payload": 1}')]
    assert stored == expected
    assert [m.is_raw for m in got] == [isinstance(f, bytes) for f in frames
                                       if f not in ("not json", '{"no_payload": 1}')]


@BOTH_ENGINES
def test_full_queue_and_large_payload_get_error_frames(ws: str, broker: zoldyq.Broker) -> None:
    """queue_full and message_too_large are answered per frame; the connection stays usable."""
    q = broker.create_queue("small", max_messages=2, max_message_bytes=100)
    with connect(ws + "/queues/small/enqueue") as c:
        for i in range(3):
            c.send(json.dumps({"payload": i}))
        answers = [json.loads(c.recv(timeout=10)) for _ in range(3)]
        assert [a.get("queue_size") for a in answers[:2]] == [1, 2]
        assert answers[2] == {
            "error": "queue_full", "message": "Queue 'small' is at capacity",
            "queue_name": "small", "queue_capacity": 2, "queue_size": 2,
            "queue_max_bytes": answers[2]["queue_max_bytes"],
        }
        q.clear()
        c.send(json.dumps({"payload": "y" * 200}))
        assert json.loads(c.recv(timeout=10)) == {
            "error": "message_too_large",
            "message": "message of 202 bytes exceeds the limit of 100 bytes",
            "size": 202, "max_message_bytes": 100,
        }
        c.send(b"z" * 101)
        assert json.loads(c.recv(timeout=10))["error"] == "message_too_large"
        c.send(json.dumps({"payload": "ok"}))
        assert json.loads(c.recv(timeout=10))["queue_size"] == 1
    assert [m.payload for m in q.get_many(10)] == ["ok"]


def test_frame_far_above_the_limit_closes_with_1009(ws: str, broker: zoldyq.Broker) -> None:
    """max_size is the message limit plus the JSON envelope: beyond it, close 1009."""
    with connect(ws + "/queues/jobs/enqueue") as c:
        c.send(json.dumps({"payload": "y" * (4096 + 2000)}))
        assert closed_with(c)[0] == 1009


# -- dequeue --------------------------------------------------------------------------


@BOTH_ENGINES
def test_stream_delivers_in_fifo_order_as_messages_arrive(ws: str, broker: zoldyq.Broker
                                                          ) -> None:
    """A stream opened before its queue exists waits, then gets every message in order, fast."""
    q = broker.queue("later")
    with connect(ws + "/queues/later/dequeue") as c:
        q.put({"first": True})
        t0 = time.monotonic()
        first = json.loads(c.recv(timeout=10))
        assert time.monotonic() - t0 < 1.0
        assert first["payload"] == {"first": True}
        assert first["queue_name"] == "later"
        assert first["enqueued_at"] > 1.6e15
        q.put_bytes(b"\x00raw")
        assert c.recv(timeout=10) == b"\x00raw"
        for i in range(0, 2000, 100):
            q.put_many(list(range(i, i + 100)))
        assert [json.loads(c.recv(timeout=10))["payload"] for _ in range(2000)] == list(
            range(2000))
    assert len(q) == 0


@BOTH_ENGINES
def test_four_consumers_share_50000_messages_exactly_once(ws: str, broker: zoldyq.Broker
                                                          ) -> None:
    """4 concurrent streams receive each of 50 000 messages exactly once, each in FIFO order."""
    total = 50_000
    q = broker.queue("shared")
    got: list[list[int]] = [[] for _ in range(4)]

    async def consume(mine: list[int], done: asyncio.Event) -> None:
        async with aconnect(ws + "/queues/shared/dequeue") as c:
            connected.release()
            while not done.is_set():
                try:
                    frame = await asyncio.wait_for(c.recv(), 0.2)
                except TimeoutError:
                    continue
                mine.append(json.loads(frame)["payload"][0])
                if sum(map(len, got)) >= total:
                    done.set()

    async def main() -> None:
        done = asyncio.Event()
        tasks = [asyncio.create_task(consume(g, done)) for g in got]
        for _ in tasks:
            await asyncio.wait_for(connected.acquire(), 10)
        for i in range(0, total, 1000):  # produced while they stream
            q.put_many([[j, PAD] for j in range(i, i + 1000)])
            await asyncio.sleep(0)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)

    connected = asyncio.Semaphore(0)
    asyncio.run(main())
    everything = sorted(i for g in got for i in g)
    assert everything == list(range(total))
    for g in got:
        assert g == sorted(g)
    assert sum(1 for g in got if g) >= 2, [len(g) for g in got]
    assert len(q) == 0


@BOTH_ENGINES
def test_stopped_consumer_leaves_the_rest_in_the_queue(ws: str, broker: zoldyq.Broker) -> None:
    """A consumer that stops reading takes little more; another one gets the rest; none lost."""
    total = 20_000
    q = broker.queue("slow")
    for i in range(0, total, 1000):
        q.put_many([[j, PAD] for j in range(i, i + 1000)])
    with connect(ws + "/queues/slow/dequeue") as stopped:
        first = [json.loads(stopped.recv(timeout=10))["payload"][0] for _ in range(10)]
        last = -1
        while last != len(q):  # until the sidecar stops taking
            last = len(q)
            time.sleep(0.5)
        assert total - len(q) < 3000, f"{total - len(q)} messages sit in buffers (~100 B each)"
        assert q.stats()["size"] == len(q) > 17_000
        with connect(ws + "/queues/slow/dequeue") as other:
            rest = drain(other)
        first += drain(stopped)
    assert len(q) == 0
    assert sorted(first + rest) == list(range(total))
    assert first == sorted(first)
    assert rest == sorted(rest)


def drain(c: Any) -> list[int]:
    """Receive until nothing comes for half a second."""
    got = []
    with contextlib.suppress(TimeoutError):
        while True:
            got.append(json.loads(c.recv(timeout=0.5))["payload"][0])
    return got


def test_consumer_stuck_too_long_is_closed_with_1008(namespace: str, broker: zoldyq.Broker
                                                     ) -> None:
    """A consumer unable to receive for ws_slow_consumer_timeout gets 1008 slow_consumer."""
    q = broker.queue("stuck")
    for i in range(0, 20_000, 1000):
        q.put_many([[j, PAD] for j in range(i, i + 1000)])
    with sidecar(namespace, ws_slow_consumer_timeout=1.0) as srv, \
            connect(srv.url + "/queues/stuck/dequeue") as c:
        c.recv(timeout=10)
        time.sleep(2.5)  # stuck: the behaviour under test, not a synchronisation
        assert closed_with(c) == (1008, "slow_consumer: received nothing for 1 s")
        assert len(q) > 15_000


CLIENT = """
import sys
from websockets.sync.client import connect
with connect(sys.argv[1]) as c:
    print("connected", flush=True)
    if sys.argv[2] == "dequeue":
        while True:
            print(c.recv(), flush=True)
    else:
        i = 0
        while True:
            c.send('{"payload": %d}' % i)
            i += 1
"""


def client_process(url: str, mode: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", CLIENT, url, mode], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None
    assert p.stdout.readline() == "connected\n"
    return p


def test_killed_consumer_loses_at_most_the_frame_in_flight(namespace: str,
                                                          broker: zoldyq.Broker) -> None:
    """kill -9 of a streaming client: it takes nothing more; the sidecar serves on."""
    with sidecar(namespace) as srv:
        _killed_consumer(srv, broker.queue("k"))


def _killed_consumer(srv: servers.Server, q: zoldyq.Queue) -> None:
    ws = srv.url
    p = client_process(ws + "/queues/k/dequeue", "dequeue")
    try:
        assert p.stdout is not None
        for i in range(5):  # lock-step: nothing else in flight
            q.put(i)
            assert json.loads(p.stdout.readline())["payload"] == i
        q.put(5)  # in flight when the client dies
        p.kill()
        p.wait(10)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    poll(lambda: "dequeue stream on 'k' from" in srv.log(), what="the sidecar to see it die")
    q.put_many(list(range(6, 106)))
    time.sleep(0.3)  # asserting that nothing happens
    left = len(q)
    assert left in (100, 101)
    with connect(ws + "/queues/k/dequeue") as c:
        rest = [json.loads(c.recv(timeout=10))["payload"] for _ in range(left)]
    assert rest == list(range(106 - left, 106))


@BOTH_ENGINES
def test_killed_producer_leaves_every_whole_frame_enqueued(ws: str, broker: zoldyq.Broker
                                                           ) -> None:
    """kill -9 of a pipelining producer: the queue holds an unbroken prefix of what it sent."""
    q = broker.queue("p")
    p = client_process(ws + "/queues/p/enqueue", "enqueue")
    try:
        poll(lambda: broker.exists("p") and len(q) >= 2000, what="2000 messages")
        p.kill()
        p.wait(10)
    finally:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    last = -1
    while last != len(q):  # until the sidecar has enqueued what reached it
        last = len(q)
        time.sleep(0.2)
    assert [m.payload for m in q.get_many(100_000)] == list(range(last))
    with connect(ws + "/queues/p/enqueue") as c:
        c.send('{"payload": "after"}')
        assert json.loads(c.recv(timeout=10))["queue_size"] == 1


# -- connection handling ----------------------------------------------------------------


@pytest.mark.parametrize(("path", "reason"), [
    ("/queues/jobs/peek", "bad_path: no stream at '/queues/jobs/peek': use /queues/<name>/"
                          "enqueue or /queues/<name>/dequeue"),
    ("/nothing", "bad_path: no stream at '/nothing': use /queues/<name>/enqueue or "
                 "/queues/<name>/dequeue"),
    ("/queues/b%20d/enqueue", "bad_name: invalid queue name 'b d': use 1-64 characters from "
                              "A-Z a-z 0-9 _ . -"),
])
def test_bad_path_or_name_closes_with_1008(ws: str, path: str, reason: str) -> None:
    """Paths other than the two streams, and bad queue names, are closed with 1008 and why."""
    with connect(ws + path) as c:
        assert closed_with(c) == (1008, reason)


def test_sigterm_closes_streams_with_1001_and_exits_0(namespace: str, broker: zoldyq.Broker
                                                      ) -> None:
    """SIGTERM: waiting and busy streams and a producer get 1001, then the sidecar exits 0."""
    q = broker.queue("busy")
    q.put_many(list(range(5000)))
    codes: dict[str, int | None] = {}

    def until_closed(name: str, c: Any) -> None:
        codes[name] = closed_with(c)[0]

    with sidecar(namespace) as srv, contextlib.ExitStack() as stack:
        clients = {name: stack.enter_context(connect(srv.url + path)) for name, path in [
            ("idle", "/queues/idle/dequeue"), ("busy", "/queues/busy/dequeue"),
            ("producer", "/queues/idle/enqueue")]}
        clients["busy"].recv(timeout=10)
        readers = [threading.Thread(target=until_closed, args=item) for item in clients.items()]
        for t in readers:
            t.start()
        t0 = time.monotonic()
        assert srv.stop(signal.SIGTERM) == 0, srv.log()
        assert time.monotonic() - t0 < 3
        for t in readers:
            t.join(10)
    assert codes == {"idle": 1001, "busy": 1001, "producer": 1001}


def test_token_is_required_when_set(namespace: str, broker: zoldyq.Broker) -> None:
    """With a token: 401 JSON without it; Bearer header or ?token= let the stream open."""
    with sidecar(namespace, token="s3cret") as srv:
        url = srv.url + "/queues/t/enqueue"
        with pytest.raises(InvalidStatus) as info, connect(url):
            pass
        assert info.value.response.status_code == 401
        assert json.loads(info.value.response.body)["error"] == "unauthorized"
        with pytest.raises(InvalidStatus), \
                connect(url, additional_headers={"Authorization": "Bearer nope"}):
            pass
        for c in (connect(url, additional_headers={"Authorization": "Bearer s3cret"}),
                  connect(url + "?token=s3cret")):
            with c:
                c.send('{"payload": 1}')
                assert json.loads(c.recv(timeout=10))["queued"] is True


def test_origin_and_connection_limit(namespace: str, broker: zoldyq.Broker) -> None:
    """Unlisted Origins get 403 JSON; past ws_max_connections, 503 JSON until one closes."""
    with sidecar(namespace, ws_origins="https://good.example",
                 ws_max_connections=2) as srv:
        url = srv.url + "/queues/o/dequeue"
        with pytest.raises(InvalidStatus) as info, \
                connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
        assert info.value.response.status_code == 403
        assert json.loads(info.value.response.body)["error"] == "forbidden_origin"
        with connect(url, origin="https://good.example") as a, \
                connect(url):  # no Origin header: not a browser
            with pytest.raises(InvalidStatus) as info, connect(url):
                pass
            assert info.value.response.status_code == 503
            assert json.loads(info.value.response.body)["error"] == "too_many_connections"
            a.close()
            poll(lambda: _accepts(url), what="a free connection slot")


def test_default_origin_policy_is_the_servers_own(namespace: str, broker: zoldyq.Broker
                                                  ) -> None:
    """Unset, a page from another site cannot drain a queue; the server's own pages can."""
    broker.queue("o").put("secret")
    with sidecar(namespace) as srv:
        url = srv.url + "/queues/o/dequeue"
        with pytest.raises(InvalidStatus) as info, \
                connect(url, origin="https://evil.example"):  # type: ignore[arg-type]
            pass
        assert info.value.response.status_code == 403
        own = f"http://127.0.0.1:{srv.port}"
        with connect(url, origin=own) as c:  # type: ignore[arg-type]
            assert json.loads(c.recv(timeout=10))["payload"] == "secret"


def _accepts(url: str) -> bool:
    try:
        with connect(url):
            return True
    except InvalidStatus:
        return False


def test_tls(namespace: str, broker: zoldyq.Broker, tmp_path: Path) -> None:
    """With a certificate and key the sidecar speaks wss://."""
    import ssl

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with sidecar(namespace, tls_cert=cert, tls_key=key) as srv:
        url = srv.url.replace("ws://", "wss://")
        ctx = ssl.create_default_context(cafile=str(cert))
        with connect(url + "/queues/s/enqueue", ssl=ctx, open_timeout=30) as c:
            c.send('{"payload": "secret"}')
            assert json.loads(c.recv(timeout=10))["queued"] is True
        with connect(url + "/queues/s/dequeue", ssl=ctx, open_timeout=30) as c:
            assert json.loads(c.recv(timeout=10))["payload"] == "secret"


def test_keepalive_closes_a_peer_that_never_answers_pings(namespace: str,
                                                          broker: zoldyq.Broker) -> None:
    """The sidecar pings; a peer that sends no pong within the interval is closed (1011)."""
    with sidecar(namespace, ws_ping_interval=0.3) as srv, \
            socket.create_connection(("127.0.0.1", srv.port)) as s:
        s.sendall(b"GET /queues/ka/dequeue HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  b"Sec-WebSocket-Version: 13\r\n\r\n")
        s.settimeout(10)
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    head, _, frames = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert frames[0] == 0x89  # a ping came first
    close = frames[frames.index(b"\x88"):]
    assert int.from_bytes(close[2:4], "big") == 1011


def test_destroyed_namespace_closes_streams_with_1011(namespace: str, broker: zoldyq.Broker
                                                      ) -> None:
    """The namespace destroyed under the sidecar: streams close with 1011 and the reason."""
    reason = (f"namespace_broken: namespace '{namespace}' does not exist on this host "
              "(create it first)")
    with sidecar(namespace) as srv, connect(srv.url + "/queues/d/dequeue") as consumer, \
            connect(srv.url + "/queues/d/enqueue") as producer:
        producer.send('{"payload": 1}')
        assert json.loads(consumer.recv(timeout=10))["payload"] == 1
        zoldyq.destroy(namespace)
        producer.send('{"payload": 2}')
        assert closed_with(producer) == (1011, reason)
        assert closed_with(consumer) == (1011, reason)
        with connect(srv.url + "/queues/other/enqueue") as late:
            late.send('{"payload": 3}')
            assert closed_with(late) == (1011, reason)


def test_compression_when_enabled(namespace: str, broker: zoldyq.Broker) -> None:
    """ws_compression negotiates permessage-deflate; off by default."""
    with sidecar(namespace, ws_compression=True) as srv:
        with connect(srv.url + "/queues/z/enqueue") as c:
            assert "permessage-deflate" in c.response.headers.get("Sec-WebSocket-Extensions", "")
            for i in range(3):
                c.send(json.dumps({"payload": "z" * 1000 + str(i)}))
            assert [json.loads(c.recv(timeout=10))["queue_size"] for _ in range(3)] == [1, 2, 3]
        with connect(srv.url + "/queues/z/dequeue") as c:
            got = [json.loads(c.recv(timeout=10))["payload"] for _ in range(3)]
        assert got == ["z" * 1000 + str(i) for i in range(3)]
    with sidecar(namespace) as srv, connect(srv.url + "/queues/z/dequeue") as c:
        assert "Sec-WebSocket-Extensions" not in c.response.headers


def test_sidecar_needs_its_namespace(namespace: str) -> None:
    """``python -m workers.ws`` attaches: without the namespace it exits 2 and says why."""
    env = servers.settings_env(namespace, ws_port=servers.free_port())
    done = subprocess.run([servers.PYTHON, "-m", "workers.ws"], env=env, cwd=servers.ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"namespace '{namespace}' does not exist on this host" in done.stderr


def test_zoldyq_ws_creates_the_namespace_and_leaves_it(namespace: str) -> None:
    """``zoldyq ws`` alone creates the namespace if needed and does not destroy it on exit."""
    port = servers.free_port()
    env = servers.settings_env(namespace, ws_port=port, max_message_bytes=2048)
    srv = servers.Server("zoldyq-ws", [servers.PYTHON, "-m", "zoldyq.cli", "ws"], env,
                         f"ws://127.0.0.1:{port}")
    try:
        srv.wait_ready(servers.tcp_ready(port))
        with connect(srv.url + "/queues/alone/enqueue") as c:
            c.send('{"payload": "kept"}')
            assert json.loads(c.recv(timeout=10))["queued"] is True
        assert srv.stop() == 0, srv.log()
    finally:
        srv.close()
    with zoldyq.attach(namespace) as b:
        assert b.defaults.max_message_bytes == 2048
        assert b.queue("alone").get().payload == "kept"
