"""The WebSocket sidecar as a test starts it, and readers for its connections."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from websockets.exceptions import ConnectionClosed

from tests.helpers import servers


@contextlib.contextmanager
def sidecar(namespace: str, **settings: Any) -> Iterator[servers.Server]:
    """The sidecar on a free port, attached to ``namespace`` (which must exist).

    Teardown sends SIGTERM and expects exit status 0 (SIGKILL if it hangs).
    """
    port = servers.free_port()
    env = servers.settings_env(namespace, ws_port=port, **settings)
    srv = servers.Server("ws-sidecar", [servers.PYTHON, "-m", "workers.ws"], env,
                         f"ws://127.0.0.1:{port}")
    try:
        srv.wait_ready(servers.tcp_ready(port))
        yield srv
        if srv.proc.poll() is None:
            assert srv.stop() == 0, srv.log()
    finally:
        srv.close()


def closed_with(c: Any) -> tuple[int | None, str | None]:
    """Read until the connection closes: the close code and reason the server sent."""
    try:
        while True:
            c.recv(timeout=10)
    except ConnectionClosed as ex:
        return (ex.rcvd.code, ex.rcvd.reason) if ex.rcvd else (None, None)


def poll(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
