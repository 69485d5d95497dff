"""Real ``redis-server`` processes for tests, on free loopback ports, always stopped.

    with redis_server.start() as srv:            # no persistence, its own temp dir
        zoldyq.redis.connect(srv.url, namespace=ns)

``kill()`` + ``restart()`` simulate a crash and a comeback on the same port
(and, with ``appendonly yes``, the same data). ``cluster(3)`` starts three
masters and joins them with ``redis-cli --cluster create``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.servers import free_port

NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (scripts/test installs redis-server)")
    return path


class RedisServer:
    def __init__(self, *args: str, port: int | None = None, directory: str | None = None):
        self.port = port or free_port()
        self.args = args or NO_PERSISTENCE
        self.dir = directory or tempfile.mkdtemp(prefix="zoldyq-redis-")
        self._own_dir = directory is None
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.close()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
               "--dir", self.dir, "--protected-mode", "no", *self.args]
        log = open(Path(self.dir) / "redis.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64)[:1] in (b"+", b"-"):  # PONG, or NOAUTH with a password
                    return
            time.sleep(0.02)
        self.kill()  # never leave a server behind that nobody will stop
        raise RuntimeError(f"redis-server not ready on {self.port}: {self.log()}")

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (Path(self.dir) / "redis.log").read_text(errors="replace")[-2000:]
        return ""

    def kill(self) -> None:
        """SIGKILL: what a crash looks like to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def start(*args: str) -> Iterator[RedisServer]:
    srv = RedisServer(*args)
    try:
        yield srv
    finally:
        srv.close()


@contextlib.contextmanager
def cluster(masters: int = 3) -> Iterator[list[RedisServer]]:
    """``masters`` cluster-enabled servers joined into one Redis Cluster (no replicas)."""
    nodes: list[RedisServer] = []
    try:
        for _ in range(masters):
            port = _cluster_port()
            nodes.append(RedisServer(
                *NO_PERSISTENCE, "--cluster-enabled", "yes",
                "--cluster-config-file", f"nodes-{port}.conf", "--cluster-node-timeout", "2000",
                port=port,
            ))
        subprocess.run(
            [_binary("redis-cli"), "--cluster", "create",
             *[f"127.0.0.1:{n.port}" for n in nodes], "--cluster-yes"],
            check=True, capture_output=True, timeout=120, env={**os.environ},
        )
        _wait_cluster_ok(nodes)
        yield nodes
    finally:
        for n in nodes:
            n.close()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port <= 55535:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def _wait_cluster_ok(nodes: list[RedisServer]) -> None:
    deadline = time.monotonic() + 90  # generous: the gossip is slow on a loaded box
    while time.monotonic() < deadline:
        out = [subprocess.run([_binary("redis-cli"), "-p", str(n.port), "cluster", "info"],
                              capture_output=True, text=True, timeout=10).stdout for n in nodes]
        if all("cluster_state:ok" in o for o in out):
            return
        time.sleep(0.1)
    raise RuntimeError("the Redis Cluster did not reach cluster_state:ok")
