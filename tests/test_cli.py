"""The ``zoldyq`` client commands, on local shared memory and against a real server."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import zoldyq
import zoldyq.redis
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace
from zoldyq.cli import main as cli

ZOLDYQ = str(Path(sys.executable).with_name("zoldyq"))
TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No ZOLDYQ_* from the developer's shell, and no zoldyq.toml."""
    for key in list(os.environ):
        if key.startswith("ZOLDYQ_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("ZOLDYQ_CONFIG", "/nonexistent/zoldyq.toml")


class Run:
    """``zoldyq ARGS`` in this process: (exit code, stdout, stderr)."""

    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
                 *where: str) -> None:  # fmt: skip
        self.capsys, self.monkeypatch, self.where = capsys, monkeypatch, list(where)

    def __call__(self, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        self.capsys.readouterr()
        code = cli.main([*args, *self.where])
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str, stdin: bytes = b"") -> object:
        code, out, err = self(*args, "--json", stdin=stdin)
        assert code == 0, err
        lines = [json.loads(line) for line in out.splitlines()]
        return lines[0] if len(lines) == 1 else lines


@pytest.fixture(params=["shm", "redis"])
def local(request, namespace, capsys, monkeypatch) -> Run:  # type: ignore[no-untyped-def]
    """The CLI on this host's shared memory, or on the session's Redis (``--backend``)."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        zoldyq.redis.connect(url, namespace, max_queues=16, max_messages=1000,
                             max_bytes=1 << 20, max_message_bytes=64 << 10).close()
        return Run(capsys, monkeypatch, "--namespace", namespace, "--backend", url)
    broker = request.getfixturevalue("broker")
    return Run(capsys, monkeypatch, "--namespace", broker.namespace, "--local")


# -- local shared memory ------------------------------------------------------------------


def test_put_and_get(local: Run) -> None:
    """A JSON payload goes in and comes out; the human output says what happened."""
    assert local("put", "q", '{"to": "a@b.c"}') == (0, "queued in 'q' (size 1)\n", "")
    assert local("put", "q", "[1, 2]") == (0, "queued in 'q' (size 2)\n", "")
    assert local("get", "q") == (0, '{"to":"a@b.c"}\n', "")
    msg = local.json("get", "q")
    assert msg["payload"] == [1, 2]
    assert msg["queue_name"] == "q"
    assert msg["raw"] is False
    assert abs(msg["enqueued_at"] / 1e6 - time.time()) < 60


def test_put_from_stdin_lines_and_raw(local: Run) -> None:
    """Payloads come from stdin, one per line with --lines, or as raw bytes with --raw."""
    assert local("put", "q", stdin=b'{"n": 0}')[0] == 0
    receipt = local.json("put", "q", "--lines", stdin=b'1\n"two"\n\n{"n": 3}\n')
    assert (receipt["count"], receipt["queue_size"]) == (3, 4)
    assert local("put", "q", "--raw", "text as bytes")[0] == 0
    assert local("put", "q", "--raw", stdin=b"\x00\xffbin")[0] == 0
    got = local.json("get", "q", "--max", "10")
    assert [m.get("payload", m.get("payload_base64")) for m in got] == [
        {"n": 0}, 1, "two", {"n": 3}, "dGV4dCBhcyBieXRlcw==", "AP9iaW4="
    ]
    assert [m["raw"] for m in got] == [False] * 4 + [True] * 2


def test_get_max_and_empty(local: Run) -> None:
    """--max takes up to N in order; an empty queue exits 3, after waiting --timeout."""
    local("put", "q", "--lines", stdin=b"1\n2\n3\n")
    assert local("get", "q", "--max", "2") == (0, "1\n2\n", "")
    assert local("get", "q", "--max", "5") == (0, "3\n", "")
    start = time.monotonic()
    assert local("get", "q", "--timeout", "0.3") == (3, "", "zoldyq: queue 'q' is empty\n")
    assert time.monotonic() - start >= 0.3
    assert local("get", "q", "--json")[:2] == (3, "")


def test_peek_leaves_the_messages(local: Run) -> None:
    """peek prints the head in order and takes nothing; an empty queue exits 3."""
    local("put", "q", "--lines", stdin=b"1\n2\n3\n")
    assert local("peek", "q", "--max", "2") == (0, "1\n2\n", "")
    assert local("peek", "q") == (0, "1\n2\n3\n", "")
    assert local("get", "q", "--max", "5") == (0, "1\n2\n3\n", "")
    assert local("peek", "q") == (3, "", "zoldyq: queue 'q' is empty\n")


def test_errors_are_clear(local: Run) -> None:
    """Bad input and missing queues exit 1 with one sentence on stderr, never a traceback."""
    assert local("get", "nope") == (1, "", "zoldyq: Queue 'nope' does not exist\n")
    code, out, err = local("put", "q", "not json")
    assert (code, out) == (1, "")
    assert err == ("zoldyq: the payload is not JSON (quote a string: '\"text\"', or send bytes "
                   "with --raw)\n")  # fmt: skip
    assert local("put", "bad/name", "1")[::2] == (
        1, "zoldyq: invalid queue name 'bad/name': use 1-64 characters from A-Z a-z 0-9 _ . -\n"
    )
    assert local("put", "q", "--lines", stdin=b"1\n{oops\n")[::2] == (
        1, "zoldyq: line 2 of stdin is not JSON\n"
    )
    assert local("get", "q", "--max", "0")[::2] == (1, "zoldyq: --max must be at least 1\n")


def test_usage_errors_exit_2(local: Run) -> None:
    """argparse errors (unknown command, missing argument) exit 2."""
    for args in (["frobnicate"], ["get"], ["put", "q", "1", "extra"]):
        with pytest.raises(SystemExit) as info:
            local(*args)
        assert info.value.code == 2


def test_queues_stats_clear_delete(local: Run) -> None:
    """Listing, the stats table with rates, clear and delete."""
    local("put", "a", "--lines", stdin=b"1\n2\n3\n")
    local("put", "b", "1")
    code, out, _ = local("queues")
    assert code == 0
    assert out.splitlines()[0].split() == ["QUEUE", "SIZE", "CAPACITY", "USED", "BYTES"]
    assert out.splitlines()[1].split()[:3] == ["a", "3", "1,000"]
    rows = local.json("queues")
    assert [(r["name"], r["size"], r["enqueued_total"]) for r in rows] == [("a", 3, 3), ("b", 1, 1)]
    frames = local.json("stats", "a", "--iterations", "2", "--interval", "0.05")
    assert [len(f["queues"]) for f in frames] == [1, 1]
    assert frames[0]["queues"][0]["enqueue_rate"] is None
    assert frames[1]["queues"][0]["enqueue_rate"] == 0.0
    code, out, _ = local("stats")
    assert code == 0
    assert "ENQ/S" in out
    assert out.count("\n") == 5  # title, blank, header, two queues
    assert local("clear", "a") == (0, "cleared 3 messages from 'a'\n", "")
    assert local("delete", "b") == (0, "deleted queue 'b'\n", "")
    assert [r["name"] for r in local.json("queues")] == ["a"]
    assert local("delete", "b")[0] == 1


def test_stream(local: Run) -> None:
    """stream prints messages as they come and stops at --count or after --idle seconds."""
    local("put", "q", "--lines", stdin=b"1\n2\n3\n4\n")
    assert local("stream", "q", "--count", "3") == (0, "1\n2\n3\n", "")
    start = time.monotonic()
    assert local("stream", "q", "--idle", "0.3") == (0, "4\n", "")
    assert 0.3 <= time.monotonic() - start < 5


@pytest.fixture
def shm_local(broker: zoldyq.Broker, capsys, monkeypatch) -> Run:  # type: ignore[no-untyped-def]
    """The CLI on this host's shared memory only (snapshots are an shm feature)."""
    return Run(capsys, monkeypatch, "--namespace", broker.namespace, "--local")


def test_snapshot_commands(shm_local: Run, tmp_path: Path) -> None:
    """snapshot save/load through the CLI, confined to --snapshot-dir."""
    shm_local("put", "q", "--lines", stdin=b"1\n2\n")
    d = str(tmp_path)
    assert shm_local("snapshot", "save", "nightly", "--snapshot-dir", d) == (
        0, "saved 2 messages in 1 queues (to snapshot 'nightly')\n", ""
    )
    assert os.listdir(d) == ["nightly.zqsnap"]
    assert shm_local.json("snapshot", "load", "nightly", "--snapshot-dir", d)["messages"] == 2
    assert shm_local("get", "q", "--max", "9")[1] == "1\n2\n1\n2\n"
    code, _, err = shm_local("snapshot", "save", "../escape", "--snapshot-dir", d)
    assert code == 1
    assert err.startswith("zoldyq: invalid snapshot name '../escape'")
    assert shm_local("snapshot", "load", "nightly")[::2] == (
        1, "zoldyq: snapshots are disabled: set snapshot_dir (ZOLDYQ_SNAPSHOT_DIR, "
           "--snapshot-dir)\n"
    )  # fmt: skip


def test_bench_local(local: Run, broker: zoldyq.Broker) -> None:
    """bench reports both phases, cleans up its queue, and draws a progress bar on request."""
    results = local.json("bench", "-n", "300", "--batch", "7")
    assert [(r["phase"], r["messages"], r["calls"]) for r in results] == [
        ("enqueue", 300, 43), ("dequeue", 300, 43)
    ]
    assert all(r["msgs_per_s"] > 0 and r["p50_us"] <= r["p99_us"] <= r["max_us"] for r in results)
    assert broker.queues() == []
    code, out, err = local("bench", "-n", "200", "--progress")
    assert code == 0
    assert out.splitlines()[1].split() == ["PHASE", "MESSAGES", "SECONDS", "MSG/S", "P50", "µs",
                                           "P99", "µs", "MAX", "µs"]  # fmt: skip
    assert "enqueue  [##############################] 100%  200/200" in err
    assert "dequeue  [##############################] 100%  200/200" in err


def test_where_by_default(broker: zoldyq.Broker, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Local when the namespace exists; a namespace asked for that is not here is an error
    (exit 4), never a silent fallback to a server's namespace; --local likewise."""
    monkeypatch.setenv("ZOLDYQ_NAMESPACE", broker.namespace)
    run = Run(capsys, monkeypatch)
    assert run("put", "q", "1")[0] == 0
    assert len(broker.queue("q")) == 1
    monkeypatch.setenv("ZOLDYQ_NAMESPACE", "zqt-missing")
    monkeypatch.setenv("ZOLDYQ_PORT", str(servers.free_port()))
    missing = "zoldyq: namespace 'zqt-missing' does not exist on this host (create it first)\n"
    assert run("queues") == (4, "", missing)
    assert run("queues", "--local") == (4, "", missing)
    assert run("queues", "--namespace", "zqt-missing") == (4, "", missing)


def test_url_names_any_engine(broker: zoldyq.Broker, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """--url takes shm:// too (the URL's namespace wins); an unknown scheme is usage (2)."""
    run = Run(capsys, monkeypatch, "--url", f"shm://{broker.namespace}")
    assert run("put", "u", "7") == (0, "queued in 'u' (size 1)\n", "")
    assert len(broker.queue("u")) == 1
    assert run("get", "u") == (0, "7\n", "")
    bad = Run(capsys, monkeypatch, "--url", "ftp://x")
    assert bad("queues") == (2, "", "zoldyq: unknown URL 'ftp://x': use shm://NAME, "
                                     "http(s)://host:port or redis://host:port\n")


@pytest.mark.parametrize("flag", ["--backend", "--url"])
def test_redis_password_file_reaches_redis(namespace: str, tmp_path: Path, flag: str,
                                           capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A password-protected Redis takes the CLI's commands with ``--redis-password-file``
    (the password itself is never an argument); without the file they are refused."""
    from tests.helpers import redis_server

    secret = "pw-" + namespace
    (tmp_path / "pw").write_text(secret + "\n")
    with redis_server.start(*redis_server.NO_PERSISTENCE, "--requirepass", secret) as rs:
        bare = Run(capsys, monkeypatch, "--namespace", namespace, flag, rs.url)
        assert bare("put", "q", "1")[0] != 0
        run = Run(capsys, monkeypatch, "--namespace", namespace, flag, rs.url,
                  "--redis-password-file", str(tmp_path / "pw"))
        assert run("put", "q", '{"n": 1}') == (0, "queued in 'q' (size 1)\n", "")
        assert run("get", "q") == (0, '{"n":1}\n', "")


def test_falls_back_to_http_only_without_a_namespace(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No namespace asked for and the default one not on this host: the command goes to
    the configured server, and says so on stderr."""
    if os.path.exists("/dev/shm/zoldyq.zoldyq"):
        pytest.skip("this host runs the default namespace 'zoldyq' (a local server)")
    monkeypatch.delenv("ZOLDYQ_NAMESPACE", raising=False)
    port = servers.free_port()
    monkeypatch.setenv("ZOLDYQ_PORT", str(port))
    code, _, err = Run(capsys, monkeypatch)("queues")
    assert code == 4
    assert err.startswith(
        f"zoldyq: no namespace 'zoldyq' on this host: using the server at "
        f"http://127.0.0.1:{port}\nzoldyq: backend http://127.0.0.1:{port} is unavailable: "
    )


def test_console_script_exit_codes(broker: zoldyq.Broker) -> None:
    """The installed ``zoldyq`` command exits with the documented codes."""
    env = {**os.environ, "ZOLDYQ_NAMESPACE": broker.namespace, "ZOLDYQ_CONFIG": os.devnull}
    put = subprocess.run([ZOLDYQ, "put", "q", '"hi"'], env=env, capture_output=True, timeout=60)
    assert (put.returncode, put.stdout) == (0, b"queued in 'q' (size 1)\n")
    get = subprocess.run([ZOLDYQ, "get", "q", "--max", "5"], env=env, capture_output=True,
                         timeout=60)  # fmt: skip
    assert (get.returncode, get.stdout) == (0, b'"hi"\n')
    empty = subprocess.run([ZOLDYQ, "get", "q"], env=env, capture_output=True, timeout=60)
    assert (empty.returncode, empty.stderr) == (3, b"zoldyq: queue 'q' is empty\n")


# -- against a real server ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[servers.Server]:
    """gunicorn, 2 workers, with a token and a snapshot directory."""
    ns = unique_namespace()
    snapdir = tmp_path_factory.mktemp("server-snaps")
    try:
        with servers.gunicorn(ns, workers=2, token=TOKEN, snapshot_dir=snapdir) as srv:
            srv.snapdir = snapdir  # type: ignore[attr-defined]
            srv.namespace = ns  # type: ignore[attr-defined]
            yield srv
    finally:
        zoldyq.destroy(ns)


@pytest.fixture
def remote(server: servers.Server, capsys, monkeypatch) -> Iterator[Run]:  # type: ignore[no-untyped-def]
    yield Run(capsys, monkeypatch, "--url", server.url, "--token", TOKEN)
    b = zoldyq.attach(server.namespace)  # type: ignore[attr-defined]
    for name in b.queues():
        b.delete(name)
    b.close()


def test_http_put_get(remote: Run) -> None:
    """put/get over HTTP: JSON, raw bytes, batches, empty."""
    assert remote("put", "r", '{"a": 1}') == (0, "queued in 'r' (size 1)\n", "")
    assert remote("put", "r", "--raw", "bytes!")[0] == 0
    assert remote.json("put", "r", "--lines", stdin=b"2\n3\n")["count"] == 2
    assert remote("peek", "r", "--max", "1") == (0, '{"a":1}\n', "")
    peeked = remote.json("peek", "r")
    assert [m["raw"] for m in peeked] == [False, True, False, False]
    assert peeked[1]["payload_base64"] == "Ynl0ZXMh"
    assert remote("get", "r") == (0, '{"a":1}\n', "")
    raw = remote.json("get", "r")
    assert (raw["raw"], raw["payload_base64"]) == (True, "Ynl0ZXMh")
    assert remote("get", "r", "--max", "10") == (0, "2\n3\n", "")
    assert remote("get", "r", "--timeout", "0.2")[::2] == (3, "zoldyq: queue 'r' is empty\n")


def test_http_management_and_errors(remote: Run, server: servers.Server) -> None:
    """queues, stats, clear, delete; server errors become exit 1 with the server's sentence."""
    remote("put", "m", "--lines", stdin=b"1\n2\n")
    assert [(r["name"], r["size"]) for r in remote.json("queues")] == [("m", 2)]
    assert remote.json("stats")["queues"][0]["enqueued_total"] == 2
    assert remote("clear", "m") == (0, "cleared 2 messages from 'm'\n", "")
    assert remote("delete", "m") == (0, "deleted queue 'm'\n", "")
    assert remote("delete", "m") == (1, "", "zoldyq: Queue 'm' does not exist\n")
    assert remote("get", "x", "--timeout", "99")[0] == 1  # above the server's maximum
    bad = Run(remote.capsys, remote.monkeypatch, "--url", server.url, "--token", "wrong")
    assert bad("queues")[::2] == (
        1, "zoldyq: missing or wrong token: send 'Authorization: Bearer <token>'\n"
    )
    nowhere = Run(remote.capsys, remote.monkeypatch, "--url",
                  f"http://127.0.0.1:{servers.free_port()}")  # fmt: skip
    assert nowhere("queues")[0] == 4


def test_http_snapshot(remote: Run, server: servers.Server) -> None:
    """/admin/snapshot saves into the server's snapshot dir only and loads back."""
    # Put locally: a worker that cached a handle on 's' would answer its first dequeue after
    # the delete and re-create with 404 (an engine issue with stale Queue handles, reported).
    b = zoldyq.attach(server.namespace)  # type: ignore[attr-defined]
    b.queue("s").put_many([1, 2])
    b.close()
    doc = remote.json("snapshot", "save", "over-http")
    assert doc == {"action": "save", "snapshot": "over-http", "queues": 1, "messages": 2,
                   "bytes": doc["bytes"]}  # fmt: skip
    assert "over-http.zqsnap" in os.listdir(server.snapdir)  # type: ignore[attr-defined]
    remote("delete", "s")
    assert remote.json("snapshot", "load", "over-http", "--queue", "s")["messages"] == 2
    assert remote("get", "s", "--max", "5") == (0, "1\n2\n", "")
    for name in ("../../etc/passwd", ".hidden", "a/b"):
        code, _, err = remote("snapshot", "save", name)
        assert code == 1
        assert err.startswith(f"zoldyq: invalid snapshot name {name!r}")
    assert remote("snapshot", "load", "nope")[::2] == (
        1, "zoldyq: snapshot 'nope' does not exist\n"
    )


def test_http_bench(remote: Run) -> None:
    """bench runs against the server too."""
    results = remote.json("bench", "-n", "100", "--batch", "10")
    assert [(r["phase"], r["messages"]) for r in results] == [("enqueue", 100), ("dequeue", 100)]


def _workers(master: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                out.append(int(entry))
    return sorted(out)


def test_metrics_agree_across_workers(remote: Run, server: servers.Server) -> None:
    """Two scrapes answered by two different workers agree on every queue figure and on the
    shared request counters; the exact counts match the traffic sent."""
    from tests.helpers.prom import value

    auth = {"Authorization": f"Bearer {TOKEN}"}
    enqueues = {"method": "POST", "route": "enqueue", "status": "200"}
    before = value(server.call("GET", "/metrics", headers=auth).body.decode(),
                   "zoldyq_http_requests_total", **enqueues)  # fmt: skip
    for _ in range(3):
        remote("put", "w", "1")
    remote("get", "w", "--max", "2")
    remote("get", "w", "--timeout", "0.05")
    workers = _workers(server.pid)
    assert len(workers) == 2
    scrapes = []
    for stopped in workers:
        os.kill(stopped, signal.SIGSTOP)  # the other worker must answer
        try:
            resp = server.call("GET", "/metrics", headers=auth, timeout=20)
        finally:
            os.kill(stopped, signal.SIGCONT)
        assert resp.status == 200
        assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
        scrapes.append(resp.body.decode())

    def shared(text: str) -> list[str]:
        return [line for line in text.splitlines()
                if line.startswith("zoldyq_") and "uptime" not in line
                and "shm_free" not in line and "route=\"metrics\"" not in line]  # fmt: skip

    assert shared(scrapes[0]) == shared(scrapes[1])
    text = scrapes[1]
    assert value(text, "zoldyq_enqueued_total", queue="w") == 3
    assert value(text, "zoldyq_dequeued_total", queue="w") == 3
    assert value(text, "zoldyq_http_requests_total", **enqueues) == before + 3
    assert value(text, "zoldyq_http_requests_total", method="GET", route="metrics",
                 status="200") >= 1  # fmt: skip
    health = server.call("GET", "/health")
    assert health.status == 200
    assert health.json()["queues"]["w"]["dequeued_total"] == 3


def test_http_long_poll_timeout_is_counted(remote: Run, server: servers.Server) -> None:
    """A long-poll that times out empty shows in zoldyq_dequeue_timeout_total."""
    remote("put", "t", "1")
    remote("get", "t")
    assert remote("get", "t", "--timeout", "0.05")[0] == 3
    from tests.helpers.prom import value

    resp = server.call("GET", "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert value(resp.body.decode(), "zoldyq_dequeue_timeout_total", queue="t") == 1


@pytest.mark.parametrize("where", ["local", "remote"])
def test_leases_delays_and_redrive(where: str, request: pytest.FixtureRequest) -> None:
    """get --lease prints the lease id; ack, nack and redrive settle it; put --delay hides."""
    run: Run = request.getfixturevalue("shm_local" if where == "local" else where)
    q = f"lease-{where}"
    assert run("put", q, '"a"')[0] == 0
    code, out, _ = run("get", q, "--lease", "30")
    assert code == 0
    lease_id, payload = out.rstrip("\n").split("\t")
    assert payload == '"a"'
    assert run("ack", q, lease_id)[0] == 0
    code, out, _ = run("ack", q, lease_id)
    assert code == 1
    assert f"not held: {lease_id}" in out
    assert run("put", q, '"b"')[0] == 0
    msg = run.json("get", q, "--lease", "30")
    assert (msg["payload"], msg["delivery_count"]) == ("b", 1)
    assert run.json("nack", q, msg["lease_id"]) == {"nacked": 1, "queue_name": q}
    assert run.json("get", q)["payload"] == "b"
    receipt = run.json("put", q, '"later"', "--delay", "2")
    assert receipt["deliver_at"] > time.time_ns() // 1000
    assert run("get", q)[0] == 3  # not yet
    assert run.json("get", q, "--timeout", "6")["payload"] == "later"
    assert run.json("redrive", q) == {"redriven": 0, "queue_name": q}  # not a DLQ: nothing
