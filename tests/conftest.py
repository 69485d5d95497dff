"""Fixtures shared by every test module.

Every test gets its own namespace (``zqt<pid>x<n>``), destroyed when the test
ends, so tests never collide and leave nothing in /dev/shm.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

import zoldyq
import zoldyq.redis
from tests.helpers import redis_server as redis_helper
from tests.helpers.namespaces import unique_namespace
from tests.helpers.redis_server import RedisServer


@pytest.fixture
def namespace() -> Iterator[str]:
    """A fresh namespace name; whatever is created under it is destroyed afterwards."""
    ns = unique_namespace()
    try:
        yield ns
    finally:
        zoldyq.destroy(ns)


@pytest.fixture
def broker(namespace: str) -> Iterator[zoldyq.Broker]:
    """A created namespace with small caps, attached."""
    b = zoldyq.create(namespace, max_queues=16, max_messages=1000, max_bytes=1 << 20,
                      max_message_bytes=64 << 10)
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (no persistence) for the whole run; tests use unique namespaces."""
    import redis

    with redis_helper.start() as srv:
        yield srv
        left = redis.Redis.from_url(srv.url).keys("*")
        assert not left, f"the tests left Redis keys behind: {sorted(left)[:20]}"


@pytest.fixture
def redis_url(redis_server: RedisServer, namespace: str) -> Iterator[str]:
    """The session's Redis URL; every key of this test's namespace is deleted afterwards."""
    yield redis_server.url
    zoldyq.redis.destroy(redis_server.url, namespace)


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes started by the test; whatever is still running at the end is killed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: remove this run's namespaces even if a test crashed hard."""
    from zoldyq.shm import segment

    mine = f"zoldyq.zqt{os.getpid()}x"
    for entry in sorted(os.listdir(segment.SHM_DIR)):
        if entry.removeprefix("sem.").startswith(mine):
            segment.unlink_leftover(entry)
