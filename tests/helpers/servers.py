"""Start real servers (gunicorn, the launcher, the WS sidecar) for tests, and always stop them.

Each server runs in its own session (process group) on a free port, with its
output in a temp file (shown when it fails to start); readiness is polled,
never slept for. ``stop()`` sends a signal and returns the exit status;
teardown kills whatever is left of the group.

    with servers.gunicorn(namespace, workers=2) as srv:
        requests.post(srv.url + "/queues/a/enqueue", json={"payload": 1})
"""

from __future__ import annotations

import contextlib
import http.client
import json as jsonlib
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_env(namespace: str, **settings: Any) -> dict[str, str]:
    """os.environ without ZOLDYQ_* leftovers, plus ZOLDYQ_<NAME> for each setting given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOLDYQ_")}
    env["ZOLDYQ_NAMESPACE"] = namespace
    env["ZOLDYQ_CONFIG"] = os.devnull  # never read a developer's zoldyq.toml
    for key, value in settings.items():
        if value is not None:
            env["ZOLDYQ_" + key.upper()] = str(value).lower() if isinstance(value, bool) \
                else str(value)
    return env


class Server:
    def __init__(self, name: str, cmd: list[str], env: Mapping[str, str], url: str,
                 cwd: Path = ROOT) -> None:
        self.name, self.cmd, self.env, self.url = name, cmd, dict(env), url
        self.port = int(url.rsplit(":", 1)[1]) if url else 0
        fd, self._logpath = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
        self._log = os.fdopen(fd, "wb")
        self.ws_port = 0
        self.proc = subprocess.Popen(
            cmd, env=self.env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, method: str, path: str, **kw: Any) -> Response:
        return call(self.url, method, path, **kw)

    def log(self) -> str:
        return Path(self._logpath).read_text(errors="replace")

    def wait_ready(self, ready: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if ready():
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the server and wait; returns its exit status (kills it if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not stop in {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(RuntimeError):
                self.stop(timeout=10)
        # children that outlived their parent (a crashed master) still sit in the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()
        os.unlink(self._logpath)


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.body[:200]!r})"


def call(url: str, method: str, path: str, body: bytes | None = None, json: Any = None,
         headers: Mapping[str, str] | None = None, timeout: float = 40.0,
         context: ssl.SSLContext | None = None) -> Response:
    """One request on a fresh connection (so requests spread over the workers)."""
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    if url.startswith("https"):
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, int(port), timeout=timeout, context=context or ssl._create_unverified_context()
        )
    else:
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    hdrs = dict(headers or {})
    if json is not None:
        body = jsonlib.dumps(json).encode()
        hdrs.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def http_ready(url: str, path: str = "/health") -> Callable[[], bool]:
    ctx = ssl._create_unverified_context() if url.startswith("https") else None

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + path, timeout=1, context=ctx) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return True  # answering at all (e.g. 401): it is up
        except urllib.error.URLError:
            return False

    return ready


def tcp_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True

    return ready


@contextlib.contextmanager
def gunicorn(namespace: str, *, workers: int = 2, tls: bool = False, **settings: Any
             ) -> Iterator[Server]:
    """Plain ``gunicorn -c gunicorn.conf.py workers.http:app`` with ZOLDYQ_* settings."""
    port = free_port()
    env = settings_env(namespace, port=port, workers=workers, **settings)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    srv = Server("gunicorn", [PYTHON, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"),
                              "workers.http:app"], env, url)
    try:
        srv.wait_ready(http_ready(url))
        yield srv
    finally:
        srv.close()


@contextlib.contextmanager
def serve(namespace: str, *args: str, ws: bool = True, **settings: Any) -> Iterator[Server]:
    """``zoldyq serve`` (the launcher): HTTP on a free port, and the sidecar on another."""
    port, ws_port = free_port(), free_port()
    env = settings_env(namespace, port=port, ws_port=ws_port, ws=ws, **settings)
    srv = Server("zoldyq-serve", [PYTHON, "-m", "zoldyq.cli", "serve", *args], env,
                 f"http://127.0.0.1:{port}")
    srv.ws_port = ws_port
    try:
        srv.wait_ready(http_ready(srv.url))
        yield srv
    finally:
        srv.close()
