"""The HTTP server's processes: graceful stop, launcher supervision, token, TLS, gthread."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import zoldyq
from tests.helpers import servers


def _shm(namespace: str) -> list[str]:
    return [e for e in os.listdir("/dev/shm") if f"zoldyq.{namespace}" in e]


def _children(pid: int) -> dict[int, str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True,
                         text=True).stdout
    return {int(line.split(None, 1)[0]): line.split(None, 1)[1] for line in out.splitlines()}


class LongPolls:
    """``n`` dequeues with a long timeout, each on its own connection, sent before returning."""

    def __init__(self, srv: servers.Server, queue: str, n: int, timeout: float = 25) -> None:
        self.results: list[tuple[int, float, dict[str, str]]] = []
        sent = threading.Semaphore(0)

        def run() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=40)
            try:
                conn.request("GET", f"/queues/{queue}/dequeue?timeout={timeout}")
                sent.release()
                r = conn.getresponse()
                r.read()
                self.results.append((r.status, time.monotonic(),
                                     {k.lower(): v for k, v in r.getheaders()}))
            except OSError:
                self.results.append((0, time.monotonic(), {}))
            finally:
                conn.close()

        self.threads = [threading.Thread(target=run) for _ in range(n)]
        for t in self.threads:
            t.start()
        for _ in self.threads:
            assert sent.acquire(timeout=15)

    def join(self) -> list[tuple[int, float, dict[str, str]]]:
        for t in self.threads:
            t.join(40)
        return self.results


def _wait_parked(srv: servers.Server, queue: str, at_least: int = 1) -> None:
    deadline = time.monotonic() + 10
    while srv.call("GET", f"/queues/{queue}").json()["waiters"] < at_least:
        assert time.monotonic() < deadline, "no long-poll parked"
        time.sleep(0.02)


@pytest.mark.parametrize("worker_class", ["asgi", "gthread"])
def test_sigterm_answers_long_polls_at_once_and_exits_0(namespace: str,
                                                       worker_class: str) -> None:
    """20 outstanding long-polls answer 204 at once, gunicorn exits 0 and removes the
    namespace, all long before ``graceful_timeout`` (30 s here): parked long-polls never
    hold a stop. The bounds are far from both ends, so a loaded box cannot fail them."""
    with servers.gunicorn(namespace, worker_class=worker_class, threads=32,
                          graceful_timeout=30) as srv:
        srv.call("PUT", "/queues/lp")
        polls = LongPolls(srv, "lp", 20)
        _wait_parked(srv, "lp")
        t0 = time.monotonic()
        assert srv.stop(signal.SIGTERM) == 0
        stopped = time.monotonic() - t0
        results = polls.join()
        log = srv.log()  # the log file goes with the server
    assert stopped < 10.0, log
    assert [status for status, _, _ in results] == [204] * 20
    if worker_class == "asgi":  # gthread closes them a moment later (KEEPALIVE_LINGER)
        assert all(h.get("connection") == "close" for _, _, h in results)
    assert max(at for _, at, _ in results) - t0 < 5.0
    assert _shm(namespace) == []


def test_gthread_bounds_long_polls_below_its_threads(namespace: str) -> None:
    """gthread: long-polls past the bound answer at once (204 + Retry-After), /health stays up."""
    with servers.gunicorn(namespace, workers=1, worker_class="gthread", threads=8) as srv:
        srv.call("PUT", "/queues/lp")
        polls = LongPolls(srv, "lp", 20, timeout=5)
        _wait_parked(srv, "lp")
        t0 = time.monotonic()
        assert srv.call("GET", "/health").status == 200
        assert srv.call("POST", "/queues/x/enqueue", json={"payload": 1}).status == 200
        assert time.monotonic() - t0 < 1.0
        srv.call("POST", "/queues/lp/batch", json={"payloads": list(range(6))})
        results = polls.join()
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200] * 6 + [204] * 14, statuses  # 8 threads - 2 spare = 6 wait
    assert all(h.get("retry-after") == "1" for status, _, h in results if status == 204)


def test_token_guards_everything_but_health(namespace: str) -> None:
    with servers.gunicorn(namespace, token="s3cret") as srv:
        r = srv.call("POST", "/queues/a/enqueue", json={"payload": 1})
        assert r.status == 401
        assert r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"
        bad = srv.call("GET", "/queues", headers={"Authorization": "Bearer s3crex"})
        assert bad.status == 401
        assert srv.call("GET", "/queues/a/dequeue").status == 401
        assert srv.call("GET", "/metrics").status == 401
        ok = {"Authorization": "Bearer s3cret"}
        assert srv.call("POST", "/queues/a/enqueue", json={"payload": 1}, headers=ok).status == 200
        assert srv.call("GET", "/queues/a/dequeue", headers=ok).json()["payload"] == 1
        assert srv.call("GET", "/health").status == 200
        assert srv.call("GET", "/openapi.json").status == 200


def test_tls(namespace: str, tmp_path: Path) -> None:
    """With a certificate and key, gunicorn serves HTTPS and the API works over it."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with servers.gunicorn(namespace, tls=True, tls_cert=cert, tls_key=key) as srv:
        context = ssl.create_default_context(cafile=str(cert))
        r = servers.call(srv.url, "POST", "/queues/t/enqueue", json={"payload": "secure"},
                         context=context)
        assert r.status == 200
        r = servers.call(srv.url, "GET", "/queues/t/dequeue", context=context)
        assert r.json()["payload"] == "secure"
        plain = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
        plain.request("GET", "/health")
        with pytest.raises(http.client.RemoteDisconnected):  # no plain HTTP on the TLS port
            plain.getresponse()
        plain.close()


def test_gunicorn_keeps_a_namespace_it_did_not_create(namespace: str) -> None:
    broker = zoldyq.create(namespace)
    broker.queue("kept").put(1)
    with servers.gunicorn(namespace) as srv:
        assert srv.call("GET", "/queues/kept").json()["size"] == 1
        assert srv.stop() == 0
    assert broker.queue("kept").get().payload == 1
    broker.close()


# -- the launcher (zoldyq serve) ----------------------------------------------------------


def test_serve_sigint_is_graceful_and_destroys_the_namespace(namespace: str) -> None:
    """A terminal's Ctrl-C (SIGINT to the foreground process group) is a graceful stop:
    the workers, in their own sessions, get it from the launcher as SIGTERM."""
    with servers.serve(namespace, ws=False) as srv:
        assert srv.call("POST", "/queues/a/enqueue", json={"payload": 1}).status == 200
        srv.call("PUT", "/queues/lp")
        polls = LongPolls(srv, "lp", 5)
        _wait_parked(srv, "lp")
        t0 = time.monotonic()
        os.killpg(srv.pid, signal.SIGINT)
        assert srv.proc.wait(15) == 0, srv.log()
        assert time.monotonic() - t0 < 2.5, srv.log()
    assert [s for s, _, _ in polls.join()] == [204] * 5
    assert _shm(namespace) == []


def _workers(launcher: int) -> set[int]:
    return {p for p, args in _children(launcher).items() if "gunicorn: worker" in args}


def _poll(done: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.05)


def test_serve_replaces_a_killed_worker_and_can_keep_the_namespace(namespace: str) -> None:
    with servers.serve(namespace, "--keep-namespace", ws=False, workers=2) as srv:
        srv.call("POST", "/queues/a/enqueue", json={"payload": "survives"})
        _poll(lambda: len(_workers(srv.pid)) == 2, "2 workers")
        before = _workers(srv.pid)
        killed = min(before)
        os.kill(killed, signal.SIGKILL)
        _poll(lambda: len(_workers(srv.pid) - before) == 1 and killed not in _workers(srv.pid),
              "worker forked again")
        assert srv.call("GET", "/queues/a/dequeue").json()["payload"] == "survives"
        assert srv.stop() == 0
    assert _shm(namespace)  # kept
    zoldyq.destroy(namespace)


def test_kill_9_of_the_launcher_stops_its_children_and_a_new_server_adopts(
        namespace: str) -> None:
    """The launcher is gunicorn's master: killed -9, there is no master to restart. Its
    workers see their parent gone and stop, the sidecar gets SIGTERM (PR_SET_PDEATHSIG),
    and the next ``zoldyq serve`` adopts the namespace, messages kept."""
    with servers.serve(namespace, workers=2) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        srv.call("POST", "/queues/a/enqueue", json={"payload": "survives"})
        _poll(lambda: len(_workers(srv.pid)) == 2, "2 workers")
        kids = set(_children(srv.pid))
        assert len(kids) == 3, kids  # 2 workers, the sidecar
        srv.kill()
        _poll(lambda: not [k for k in kids if Path(f"/proc/{k}").exists()],
              "exit of the workers and the sidecar")
    with servers.serve(namespace, ws=False) as srv:
        assert srv.call("GET", "/queues/a/dequeue").json()["payload"] == "survives"
        assert "left by a server that stopped or died" in srv.log()
        assert srv.stop() == 0
    assert _shm(namespace) == []  # adopted: destroyed like its own


def test_serve_is_the_gunicorn_master_and_the_sidecars_parent(namespace: str) -> None:
    """`zoldyq serve` runs gunicorn's arbiter itself: the workers and the WebSocket sidecar
    are its children, each in its own session (a terminal's Ctrl-C reaches only it)."""
    with servers.serve(namespace, workers=2) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        _poll(lambda: len(_workers(srv.pid)) == 2, "2 workers")
        title = Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        assert title.startswith(b"gunicorn: master ["), title
        kids = _children(srv.pid)
        assert sum("workers.ws" in args for args in kids.values()) == 1, kids
        assert len(kids) == 3, kids
        _poll(lambda: all(os.getsid(kid) == kid for kid in kids), "a session for each child")
        assert srv.stop() == 0
    assert _shm(namespace) == []


def test_json_logs_one_line_per_event(namespace: str) -> None:
    """--log-format json: every line the server writes is one JSON object, errors included."""
    with servers.gunicorn(namespace, log_format="json", log_level="debug") as srv:
        srv.call("GET", "/queues/nope/dequeue")
        srv.call("POST", "/queues/a/enqueue", body=b"{bad")
        assert srv.stop() == 0
        lines = [json.loads(line) for line in srv.log().splitlines() if line.strip()]
    errors = [d for d in lines if d["logger"] == "zoldyq.http"]
    assert len(errors) == 2
    assert errors[0]["msg"] == ("GET /queues/nope/dequeue -> 404 queue_not_found: "
                                "Queue 'nope' does not exist")
    assert errors[1]["msg"].startswith("POST /queues/a/enqueue -> 400 bad_json: request body "
                                       "is not valid JSON: ")
    assert {d["logger"] for d in lines} >= {"gunicorn.error", "zoldyq.http"}
