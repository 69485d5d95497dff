"""The sidecar at its descriptor limit answers 503 and keeps its log small (issue 10, item 12).

It runs under ``ulimit -n 512`` (soft and hard, as a container may set), so
the connection limit derives from the descriptors, whatever
``ws_max_connections`` says.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

import zoldyq
from tests.helpers import servers
from zoldyq.ws.server import ACCEPT_BURSTS, BACKLOG, FD_MARGIN, FDS_PER_QUEUE, LINGER

NOFILE = 512
MAX_QUEUES = 16
LIMIT = NOFILE - FD_MARGIN - FDS_PER_QUEUE * MAX_QUEUES - ACCEPT_BURSTS * BACKLOG - LINGER
LIMITED = ("import resource, runpy; "
           f"resource.setrlimit(resource.RLIMIT_NOFILE, ({NOFILE}, {NOFILE})); "
           "runpy.run_module('workers.ws', run_name='__main__')")


@pytest.fixture
def sidecar(namespace: str) -> Iterator[servers.Server]:
    zoldyq.create(namespace, max_queues=MAX_QUEUES).close()
    port = servers.free_port()
    env = servers.settings_env(namespace, ws_port=port, ws_max_connections=10_000)
    srv = servers.Server("ws-sidecar", [servers.PYTHON, "-c", LIMITED], env,
                         f"ws://127.0.0.1:{port}")
    try:
        srv.wait_ready(servers.tcp_ready(port))
        yield srv
    finally:
        srv.close()


def _refused(url: str) -> dict[str, object]:
    t0 = time.monotonic()
    with pytest.raises(InvalidStatus) as info:
        connect(url, open_timeout=5).close()
    assert time.monotonic() - t0 < 2
    assert info.value.response.status_code == 503
    return json.loads(info.value.response.body)  # type: ignore[no-any-return]


def test_descriptor_limit_gives_503_not_a_hang(sidecar: servers.Server) -> None:
    """Half-open floods and too many streams get 503 at once; the log holds no traceback."""
    url = sidecar.url + "/queues/q/dequeue"
    with contextlib.ExitStack() as stack:
        raw = []
        for _ in range(NOFILE):  # more TCP connections than the sidecar has descriptors
            s = stack.enter_context(socket.create_connection(("127.0.0.1", sidecar.port)))
            raw.append(s)
        time.sleep(1.5)  # past the second a refused socket may wait for its request
        assert _refused(url)["error"] == "too_many_connections"
        closed = 0
        for s in raw:
            s.settimeout(0.01)
            with contextlib.suppress(TimeoutError):
                closed += s.recv(100) == b""  # sent no request: closed without an answer
        assert closed >= NOFILE - LIMIT - 2
    time.sleep(0.5)  # the sidecar sees them close
    with contextlib.ExitStack() as stack:
        for _ in range(LIMIT):
            stack.enter_context(connect(url, open_timeout=10))
        body = _refused(url)
        assert body["error"] == "too_many_connections"
        assert f"maximum of {LIMIT} " in str(body["message"])
    with connect(url, open_timeout=5):
        pass  # room again
    log = sidecar.log()
    assert "Traceback" not in log
    assert "out of system resource" not in log
    problems = [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line]
    assert len(problems) == 1, problems  # the one saying what the limit is and why
