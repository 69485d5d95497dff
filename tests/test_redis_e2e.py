"""Front ends on Redis, end to end: real redis-server, real gunicorn, real sidecar.

Several front ends share the same queues; a dead Redis makes requests fail
fast with 503 ``backend_unavailable`` (WS streams close 1011) and the front
ends recover by themselves when it is back; with ``appendfsync always`` an
acknowledged enqueue survives a Redis crash; a 3-master Cluster spreads
queues over shards, moves between shards included.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect

import zoldyq
import zoldyq.redis
from tests.helpers import redis_server, servers
from tests.helpers.ws import closed_with, sidecar
from zoldyq.api import KIND_JSON

AOF_ALWAYS = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


@pytest.fixture
def two_front_ends(namespace: str, redis_url: str) -> Iterator[list[servers.Server]]:
    """Two independent gunicorn front ends on the same Redis namespace."""
    with servers.gunicorn(namespace, workers=1, backend=redis_url) as a, \
            servers.gunicorn(namespace, workers=1, backend=redis_url) as b:
        yield [a, b]


def test_long_poll_on_one_front_end_is_woken_by_an_enqueue_on_the_other(
        two_front_ends: list[servers.Server]) -> None:
    """A dequeue parked on front end A returns within 50 ms (x4 CI slack) of an enqueue on B."""
    a, b = two_front_ends
    a.call("PUT", "/queues/x")
    lags = []
    for i in range(5):
        got: list[servers.Response] = []

        def poll(into: list[servers.Response] = got) -> None:
            into.append(a.call("GET", "/queues/x/dequeue?timeout=10"))

        t = threading.Thread(target=poll)
        t.start()
        time.sleep(0.3)  # parked
        put_at = time.monotonic()
        assert b.call("POST", "/queues/x/enqueue", json={"payload": i}).status == 200
        t.join(10)
        lags.append(time.monotonic() - put_at)
        assert got[0].status == 200
        assert got[0].json()["payload"] == i
    assert sorted(lags)[2] < 0.2, lags


def test_four_consumers_over_two_front_ends_get_each_message_once_in_order(
        two_front_ends: list[servers.Server]) -> None:
    """2 producers and 4 consumers spread over both front ends: every message exactly once,
    each producer's messages in its order."""
    n_per_producer = 1500
    seen: list[list[tuple[int, int]]] = [[] for _ in range(4)]
    done = threading.Event()

    def produce(p: int) -> None:
        srv = two_front_ends[p % 2]
        for start in range(0, n_per_producer, 50):
            batch = [{"p": p, "i": i} for i in range(start, start + 50)]
            r = srv.call("POST", "/queues/mp/batch", json={"payloads": batch})
            assert r.status == 200, r

    def consume(c: int) -> None:
        srv = two_front_ends[c % 2]
        while True:
            r = srv.call("GET", "/queues/mp/dequeue?max=20&timeout=0.5")
            if r.status == 204:
                if done.is_set():
                    return
                continue
            assert r.status == 200, r
            seen[c] += [(m["payload"]["p"], m["payload"]["i"]) for m in r.json()["messages"]]

    two_front_ends[0].call("PUT", "/queues/mp")
    consumers = [threading.Thread(target=consume, args=(c,)) for c in range(4)]
    producers = [threading.Thread(target=produce, args=(p,)) for p in range(2)]
    for t in consumers + producers:
        t.start()
    for t in producers:
        t.join(120)
    done.set()
    for t in consumers:
        t.join(120)
    every = [m for s in seen for m in s]
    assert len(every) == len(set(every)) == 2 * n_per_producer
    for s in seen:  # each consumer sees each producer's messages in order
        for p in range(2):
            mine = [i for q, i in s if q == p]
            assert mine == sorted(mine)
    assert all(seen), "a consumer got nothing"


def test_stopping_a_front_end_keeps_the_data_destroy_removes_it(namespace: str,
                                                                redis_url: str) -> None:
    """On Redis, stopping ``zoldyq serve`` deletes nothing; ``zoldyq destroy`` deletes all."""
    with servers.serve(namespace, ws=False, backend=redis_url) as srv:
        assert srv.call("POST", "/queues/keep/enqueue", json={"payload": 1}).status == 200
        assert srv.stop() == 0
    with zoldyq.redis.connect(redis_url, namespace) as b:
        assert len(b.queue("keep")) == 1
    from zoldyq.cli.main import main

    assert main(["destroy", "--namespace", namespace, "--backend", redis_url]) == 0
    with zoldyq.redis.connect(redis_url, namespace) as b:
        assert b.queues() == []


def _producer(srv: servers.Server, acked: list[int], statuses: collections.Counter[int],
              slow: list[float], stop: threading.Event) -> None:
    for i in itertools.count():
        if stop.is_set():
            return
        t0 = time.monotonic()
        try:
            r = srv.call("POST", "/queues/dur/enqueue", json={"payload": i}, timeout=10)
        except OSError:
            statuses[0] += 1
            continue
        elapsed = time.monotonic() - t0
        statuses[r.status] += 1
        if r.status == 200:
            acked.append(i)
        else:
            assert r.status == 503, r
            assert r.json()["error"] == "backend_unavailable", r
            slow.append(elapsed)
            time.sleep(0.02)


def test_redis_crash_gives_503_then_recovery_and_loses_nothing_acknowledged(
        namespace: str) -> None:
    """Redis kill -9 under load: enqueues answer 503 backend_unavailable at once (never hang,
    never 500), /health says why; after the restart the front end recovers by itself, and
    with appendfsync always every acknowledged enqueue is still there."""
    with redis_server.start(*AOF_ALWAYS) as rs, \
            servers.gunicorn(namespace, workers=2, backend=rs.url) as srv:
        acked: list[int] = []
        statuses: collections.Counter[int] = collections.Counter()
        slow: list[float] = []
        stop = threading.Event()
        t = threading.Thread(target=_producer, args=(srv, acked, statuses, slow, stop))
        t.start()
        try:
            time.sleep(1.0)
            rs.kill()
            time.sleep(1.0)
            health = srv.call("GET", "/health")
            assert health.status == 503
            assert health.json()["backend"]["engine"] == "redis"
            rs.start()
            deadline = time.monotonic() + 15
            before = len(acked)
            while len(acked) < before + 50 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(30)
        assert statuses[503] > 0, statuses
        assert set(statuses) <= {200, 503}, statuses  # never a 500, never a dropped connection
        assert len(acked) > before + 50, "the front end did not recover"
        assert max(slow) < 1.0, "a request hung while Redis was down"
        assert srv.call("GET", "/health").json()["backend"]["latency_ms"] >= 0
        with zoldyq.redis.connect(rs.url, namespace) as b:
            stored = [m.payload for m in b.queue("dur").get_many(1_000_000)]
        assert set(acked) <= set(stored), "an acknowledged enqueue was lost"
        assert stored == sorted(stored)


def test_ws_stream_closes_1011_when_redis_dies_and_reconnects_after(namespace: str) -> None:
    """A WS consumer on a dead Redis is closed with 1011; once Redis is back a new one streams."""
    with redis_server.start() as rs:
        zoldyq.redis.connect(rs.url, namespace).close()
        with sidecar(namespace, backend=rs.url) as srv, \
                connect(srv.url + "/queues/w/dequeue") as c:
            time.sleep(0.3)  # parked
            rs.kill()
            code, reason = closed_with(c)
            assert code == 1011, reason
            assert reason
            assert reason.startswith("backend_unavailable")
            rs.start()
            with zoldyq.redis.connect(rs.url, namespace) as b:
                b.queue("w").put("back")
            with connect(srv.url + "/queues/w/dequeue") as c2:
                assert '"back"' in str(c2.recv(timeout=10))


def test_cluster_spreads_queues_over_shards(namespace: str) -> None:
    """On a 3-master Redis Cluster, queues land on different shards and everything works,
    dead-lettering and redrive between shards included."""
    with redis_server.cluster(3) as nodes:
        url = f"redis+cluster://127.0.0.1:{nodes[0].port}"
        b = zoldyq.redis.connect(url, namespace, max_queues=64)
        try:
            names = [f"q{i}" for i in range(24)]
            for i, name in enumerate(names):
                b.queue(name).put_many([{"q": name, "i": j} for j in range(20)])
                assert len(b.queue(name)) == 20, i
            def shard(name: str) -> int:
                return int(b._client.keyslot(f"{{{namespace}:{name}}}:r")) // 5462

            assert {shard(n) for n in names} == {0, 1, 2}, "queues did not spread over 3 shards"
            for name in names:
                got = b.queue(name).get_many(100)
                assert [m.payload["i"] for m in got] == list(range(20))
            b._client.script_flush()  # the asyncio batches below load them again

            async def concurrently() -> list[list[Any]]:  # batched: one pipeline over shards
                await asyncio.gather(*(b.queue(n).aput_records([(KIND_JSON, b'"a"')])
                                       for n in names))
                return await asyncio.gather(*(b.queue(n).aget_many(10) for n in names))

            got_all = asyncio.run(concurrently())
            assert [[m.payload for m in g] for g in got_all] == [["a"]] * len(names)
            # the move below must cross shards, whatever shard the namespace puts "job" on
            dlq = next(f"dead{i}" for i in range(100) if shard(f"dead{i}") != shard("job"))
            b.create_queue("job", max_deliveries=1, dead_letter_queue=dlq)
            b.queue("job").put("poison")
            assert b.queue("job").get(lease=30).nack() == dlq
            assert [m.payload for m in b.queue(dlq).peek()] == ["poison"]
            assert b.queue(dlq).redrive() == 1
            assert b.queue("job").get().payload == "poison"
            t0 = time.monotonic()
            threading.Timer(0.2, lambda: b.queue("q3").put("wake")).start()
            assert b.queue("q3").get(timeout=5).payload == "wake"
            assert time.monotonic() - t0 < 2
        finally:
            b.close()
            zoldyq.redis.destroy(url, namespace)



def _tree_cmdlines(pid: int) -> list[str]:
    """The command lines of ``pid`` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError):
            out.append(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"))
            for task in os.listdir(f"/proc/{p}/task"):
                kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                todo += [int(k) for k in kids]
    return out


@pytest.mark.parametrize("where", ["url", "file"])  # ZOLDYQ_REDIS_PASSWORD: test_redis_units
def test_redis_password_never_on_a_command_line_or_in_a_log(namespace: str, tmp_path: Path,
                                                             where: str) -> None:
    """A Redis password (in the URL or a password file) reaches
    Redis, but no process's command line, no log line, /health or ``zoldyq config``."""
    secret = "s3cret-" + namespace
    with redis_server.start(*redis_server.NO_PERSISTENCE, "--requirepass", secret) as rs:
        url = f"redis://:{secret}@127.0.0.1:{rs.port}/0" if where == "url" else rs.url
        extra: dict[str, str] = {}
        if where == "file":
            (tmp_path / "pw").write_text(secret + "\n")
            extra["redis_password_file"] = str(tmp_path / "pw")
        with servers.serve(namespace, backend=url, **extra) as srv:
            srv.wait_ready(servers.tcp_ready(srv.ws_port))
            assert srv.call("POST", "/queues/s/enqueue", json={"payload": 1}).status == 200
            health = srv.call("GET", "/health")
            assert health.status == 200
            assert secret not in health.body.decode()
            cmdlines = _tree_cmdlines(srv.pid)
            assert len(cmdlines) >= 3  # launcher (gunicorn's master), workers, sidecar
            assert not [c for c in cmdlines if secret in c]
            assert srv.stop() == 0
            assert secret not in srv.log()
        env = {**os.environ, "ZOLDYQ_BACKEND": url, "ZOLDYQ_CONFIG": os.devnull}
        shown = subprocess.run([servers.PYTHON, "-m", "zoldyq.cli", "config"], env=env,
                               capture_output=True, text=True, check=True).stdout
        assert secret not in shown
        with zoldyq.redis.connect(url if where == "url" else
                                  f"redis://:{secret}@127.0.0.1:{rs.port}/0", namespace) as b:
            assert len(b.queue("s")) == 1


def test_a_stuck_redis_fails_awaited_calls_in_bounded_time(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis that stops answering (SIGSTOP: the socket stays open) makes awaited calls,
    several at once, raise BackendUnavailable after about SOCKET_TIMEOUT instead of
    hanging; once it answers again the same broker carries on."""
    import signal

    from zoldyq.redis import client as rclient

    monkeypatch.setattr(rclient, "SOCKET_TIMEOUT", 0.5)
    with redis_server.start() as rs, zoldyq.redis.connect(rs.url, namespace) as broker:
        q = broker.queue("s")

        async def run() -> float:
            await q.aput_records([(KIND_JSON, b"1")])  # connected
            assert rs.proc is not None
            os.kill(rs.proc.pid, signal.SIGSTOP)
            try:
                t0 = time.monotonic()
                got = await asyncio.gather(*(q.aget_many(1) for _ in range(3)),
                                           return_exceptions=True)
                took = time.monotonic() - t0
            finally:
                os.kill(rs.proc.pid, signal.SIGCONT)
            assert all(isinstance(g, zoldyq.BackendUnavailable) for g in got), got
            assert (await q.aput_records([(KIND_JSON, b"2")])).queue_size >= 1
            # a get cut short may still run once the server wakes (its answer is lost, as
            # for any request whose connection broke): 1 is there or was taken, never twice
            assert [m.payload for m in await q.aget_many(10)] in ([1, 2], [2])
            return took

        took = asyncio.run(run())
    assert 0.4 < took < 10, took  # 0.5 s, checked every 0.125 s; generous under load


def test_a_get_cancelled_while_its_script_runs_gives_the_messages_back(
        redis_url: str, namespace: str) -> None:
    """A plain get whose caller is cancelled once its script is on its way (the client
    left mid-call) puts what the script took back at the head, in order."""
    with zoldyq.redis.connect(redis_url, namespace) as broker:
        q = broker.queue("c")
        q.put_many([1, 2, 3])

        async def run() -> None:
            task = asyncio.ensure_future(q.aget_many(2))
            for _ in range(100):  # until its script waits for this loop turn's batch
                await asyncio.sleep(0)
                if broker._abatches is not None and broker._abatches._pending:
                    break
            else:
                raise AssertionError("the get never reached the batch")
            assert broker._abatches is not None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(500):  # up to 10 s: its script ran, the undo of its reply too
                await asyncio.sleep(0.02)
                if not broker._abatches._tasks:
                    break

        asyncio.run(run())
        assert [m.payload for m in q.peek()] == [1, 2, 3]
        assert q.stats()["dequeued_total"] == 0
