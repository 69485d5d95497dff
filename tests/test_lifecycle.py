"""A server's namespace over its life: ownership, restarts, interrupted teardown, reload."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.multiproc import spawn
from zoldyq.ops import snapshot
from zoldyq.shm import names, owner, segment
from zoldyq.shm.layout import FLAG_DESTROYED, R_FLAGS
from zoldyq.shm.registry import Caps, Registry


def _shm(namespace: str) -> list[str]:
    return segment.leftovers(names.registry(namespace))


def _cli(namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zoldyq.cli", *args],
                          env=servers.settings_env(namespace), capture_output=True, text=True,
                          timeout=30, cwd=servers.ROOT)


def _wait_exit(srv: servers.Server, timeout: float = 15.0) -> int:
    try:
        return srv.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{srv.name} still running:\n{srv.log()}") from None


def _wait_log(srv: servers.Server, pattern: str, count: int = 1, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, srv.log())) < count:
        assert time.monotonic() < deadline, f"no {count}x {pattern!r} in:\n{srv.log()}"
        time.sleep(0.05)


def test_a_second_server_on_the_same_namespace_is_refused(namespace: str) -> None:
    """A second ``zoldyq serve`` on a served namespace exits 2 naming the first one's pid,
    and the first keeps its queues (it used to lose them when the second stopped)."""
    with servers.serve(namespace, ws=False) as first:
        assert first.call("POST", "/queues/a/enqueue", json={"payload": 1}).status == 200
        second = subprocess.run(
            [sys.executable, "-m", "zoldyq.cli", "serve"], capture_output=True, text=True,
            env=servers.settings_env(namespace, port=servers.free_port(), ws=False),
            timeout=30, cwd=servers.ROOT)
        assert second.returncode == 2, second.stderr
        assert (f"namespace '{namespace}' is served by another zoldyq server "
                f"(pid {first.pid}): stop it first") in second.stderr
        assert first.call("GET", "/queues/a/dequeue").json()["payload"] == 1
        assert first.call("GET", "/health").status == 200
        assert first.stop() == 0
    assert _shm(namespace) == []


def test_destroy_refuses_while_served_and_a_forced_one_stops_the_server(
        namespace: str) -> None:
    """``zoldyq destroy`` refuses while a live server holds the namespace; ``--force``
    destroys it, and the server then exits 1 without destroying the namespace
    re-created meanwhile (it never destroys a namespace it did not create)."""
    with servers.serve(namespace, ws=False) as srv:
        srv.call("POST", "/queues/a/enqueue", json={"payload": 1})
        refused = _cli(namespace, "destroy")
        assert refused.returncode == 1
        assert f"namespace '{namespace}' is served by a live server (pid {srv.pid})" \
            in refused.stderr
        assert srv.call("GET", "/queues/a").json()["size"] == 1
        forced = _cli(namespace, "destroy", "--force")
        assert forced.returncode == 0, forced.stderr
        fresh = zoldyq.create(namespace, max_bytes=1 << 20)  # someone else's, right after
        fresh.queue("new").put("not yours")
        assert _wait_exit(srv) == 1
        assert "was destroyed under this server" in srv.log()
    assert fresh.queue("new").get().payload == "not yours"
    fresh.close()


def test_plain_gunicorn_never_destroys_a_namespace_re_created_under_it(
        namespace: str) -> None:
    """Plain gunicorn owns the namespace it created, but a namespace destroyed (forced)
    and re-created by someone else while it ran is left alone when it stops, and it
    exits 1 as the launcher does."""
    with servers.gunicorn(namespace, workers=1) as srv:
        assert _cli(namespace, "destroy").returncode == 1  # held by the gunicorn master
        assert _cli(namespace, "destroy", "--force").returncode == 0
        fresh = zoldyq.create(namespace, max_bytes=1 << 20)
        fresh.queue("new").put("not yours")
        assert srv.stop() == 1
        assert "was destroyed under this server: exit status 1" in srv.log()
    assert fresh.queue("new").get().payload == "not yours"
    fresh.close()


def test_a_restart_after_a_crash_keeps_messages_and_applies_new_defaults(
        namespace: str) -> None:
    """After kill -9 of the whole server, a start with other settings reattaches (the
    messages survive), gives new queues the new default caps, and logs that max_queues
    of the existing namespace cannot change."""
    with servers.serve(namespace, ws=False) as srv:
        srv.call("POST", "/queues/old/enqueue", json={"payload": "survives"})
        srv.kill()
    with servers.serve(namespace, ws=False, default_queue_capacity=10, max_queues=50) as srv:
        assert srv.call("GET", "/queues/old/dequeue").json()["payload"] == "survives"
        assert srv.call("PUT", "/queues/new").json()["capacity"] == 10
        log = srv.log()
        assert "reattached" in log
        assert (f"namespace '{namespace}' keeps max_queues=100, set when it was created: "
                "max_queues=50 applies only to a new namespace") in log
        assert srv.stop() == 0
    assert _shm(namespace) == []  # adopted from the dead server: destroyed like its own


def test_a_destroy_killed_half_way_is_finished_at_the_next_start(
        namespace: str, tmp_path: Path) -> None:
    """A destroy kill -9ed after its first queue (namespace flagged destroyed, other
    queues still there) is finished off by the next start, which then serves (it used
    to answer 503 "was destroyed" until someone destroyed it by hand)."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    broker.queue("a").put(1)
    broker.queue("b").put(1)
    broker.close()
    marker = tmp_path / "paused"
    proc = spawn("do", namespace, "-", "destroy", env={
        **os.environ, "ZOLDYQ_TEST_PAUSE": "registry.destroying",
        "ZOLDYQ_TEST_PAUSE_FILE": str(marker)})
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert proc.poll() is None, "destroy exited before its pause point"
            assert time.monotonic() < deadline, "destroy never reached its pause point"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(10)
    with zoldyq.attach(namespace) as left:
        assert left.registry.destroyed
        assert left.registry.words[R_FLAGS] & FLAG_DESTROYED
        assert len(_shm(namespace)) > 1  # besides the registry, the second queue's objects
    with servers.serve(namespace, ws=False) as srv:
        assert srv.call("GET", "/health").status == 200
        assert srv.call("POST", "/queues/b/enqueue", json={"payload": 2}).status == 200
        assert srv.call("GET", "/queues").json()["count"] == 1
        assert srv.stop() == 0
    assert _shm(namespace) == []


def test_a_failed_start_leaves_no_lock_file_or_semaphore(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A namespace creation that fails once its lock objects exist removes them."""
    real = segment.create_shm

    def no_room(name: str, size: int, reserve: int) -> object:
        if name == names.registry(namespace):
            raise zoldyq.StorageExhausted(size, 0)
        return real(name, size, reserve)

    monkeypatch.setattr(segment, "create_shm", no_room)
    with pytest.raises(zoldyq.StorageExhausted):
        Registry.create(namespace, 4, Caps(10, 1 << 20, 1024))
    assert _shm(namespace) == []


def test_a_killed_snapshot_save_leaves_no_partial_file_for_good(tmp_path: Path) -> None:
    """The .tmp file of a save that was killed is removed at the next start or save; the
    file of a save still writing (it holds an flock on it) is left alone."""
    dead = tmp_path / ".ns.zqsnap.dead1.tmp"
    dead.write_bytes(b"half a snapshot")
    live = tmp_path / ".ns.zqsnap.live1.tmp"
    live.write_bytes(b"being written")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(live)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "locked\n"
        assert snapshot.clean_partial(tmp_path) == 1
        assert not dead.exists()
        assert live.exists()
    finally:
        holder.kill()
        holder.wait(10)
    assert snapshot.clean_partial(tmp_path, "ns.zqsnap") == 1
    assert sorted(tmp_path.iterdir()) == []


def test_sighup_reloads_workers_and_sidecar_and_keeps_the_queues(namespace: str) -> None:
    """SIGHUP to ``zoldyq serve`` restarts the gunicorn workers and the sidecar
    gracefully, like gunicorn's own HUP: the launcher stays, queues stay."""
    with servers.serve(namespace) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        srv.call("POST", "/queues/a/enqueue", json={"payload": "kept"})
        _wait_log(srv, r"Booting worker with pid")
        booted = len(re.findall(r"Booting worker with pid", srv.log()))
        os.kill(srv.pid, signal.SIGHUP)
        _wait_log(srv, r"started ws \(pid \d+\)", count=2)
        _wait_log(srv, r"Booting worker with pid", count=2 * booted)
        assert srv.proc.poll() is None
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        srv.wait_ready(servers.http_ready(srv.url))
        assert srv.call("GET", "/queues/a/dequeue").json()["payload"] == "kept"
        assert srv.stop() == 0
    assert _shm(namespace) == []


def _fd_targets(pid: int) -> dict[int, str]:
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed while we looked
    return out


def test_the_forked_children_inherit_no_descriptor_of_the_launcher(namespace: str) -> None:
    """The workers and the sidecar are forked from the launcher (they share its imported
    modules), but keep none of its own descriptors (the workers keep those of the app
    the launcher built for them): not its owner flock (a second server would be refused
    until they exit); stdin is /dev/null."""
    with servers.serve(namespace, workers=2) as srv:
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        held = set(_fd_targets(srv.pid).values())
        own = owner.path(namespace)
        assert own in held  # the launcher holds the claim
        _wait_log(srv, r"ASGI server listening on", count=2)  # both workers past post_fork
        kids = [int(k) for k in Path(f"/proc/{srv.pid}/task/{srv.pid}/children").read_text()
                .split()]
        assert len(kids) == 3, kids  # 2 gunicorn workers and the sidecar
        for kid in kids:
            fds = _fd_targets(kid)
            assert fds[0] == os.devnull
            assert own not in fds.values(), fds
        assert srv.stop() == 0


def test_a_child_that_keeps_dying_at_once_stops_the_server_with_status_1(
    namespace: str,
) -> None:
    """The sidecar cannot bind its port (taken): the launcher forks it again with a growing
    delay, gives up after a few quick deaths, stops gunicorn and exits 1, leaving no
    namespace behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = servers.free_port()
        srv = servers.Server("zoldyq-serve", [sys.executable, "-m", "zoldyq.cli", "serve"],
                             servers.settings_env(namespace, port=port,
                                                  ws_port=taken.getsockname()[1]),
                             f"http://127.0.0.1:{port}")
        try:
            assert _wait_exit(srv, timeout=60) == 1
            log = srv.log()
        finally:
            srv.close()
    assert "right after starting: giving up" in log, log
    assert log.count("cannot serve") >= 2, log  # restarted, not given up on at once
    assert _shm(namespace) == []
