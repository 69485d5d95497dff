"""A drained queue gives its ring memory back to /dev/shm, crash-safely, on both paths."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

import zoldyq
from tests.helpers.multiproc import spawn
from zoldyq.shm import segment, speedups
from zoldyq.shm.layout import TRIM_AGE_US

RING_BYTES = 8 << 20


@pytest.fixture(autouse=True, params=["c", "pure"])
def engine_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs on the compiled path and on the pure-Python one."""
    if request.param == "pure":
        monkeypatch.setattr(speedups, "ENABLED", False)
    elif not speedups.ENABLED:
        pytest.skip("zoldyq.shm._speedups is not built: the C path is untested")
    return str(request.param)


def shm_bytes(q: zoldyq.Queue) -> int:
    """Memory /dev/shm really holds for the queue's segment (header + ring), from st_blocks."""
    sq = q._sq
    assert sq is not None
    path = os.path.join(segment.SHM_DIR, sq._objects["ring"].lstrip("/"))
    return os.stat(path).st_blocks * 512


def fill_and_drain(q: zoldyq.Queue, n: int = 40_000) -> None:
    payload = b"y" * 100
    for i in range(0, n, 1000):
        q.put_records([(2, payload)] * min(1000, n - i))
    assert shm_bytes(q) > 4 << 20  # the ring grew to megabytes


def test_a_queue_drained_of_old_messages_holds_at_most_64_kib(namespace: str) -> None:
    """Draining messages older than a second gives all but 32 KiB of the ring back."""
    b = zoldyq.create(namespace, max_bytes=RING_BYTES)
    q = b.queue("t")
    fill_and_drain(q)
    time.sleep(TRIM_AGE_US / 1e6 + 0.1)
    got = 0
    while m := q.get_many(1000):
        got += len(m)
    assert got == 40_000
    assert shm_bytes(q) <= 64 << 10
    q.put_bytes(b"after")  # and the queue works on, from the kept pages
    assert q.get().data == b"after"  # type: ignore[union-attr]
    b.close()


def test_a_streaming_queue_keeps_its_memory(namespace: str) -> None:
    """A queue drained as fast as it fills is not trimmed (no fallocate per message)."""
    b = zoldyq.create(namespace, max_bytes=RING_BYTES)
    q = b.queue("t")
    fill_and_drain(q)
    while q.get_many(1000):
        pass
    assert shm_bytes(q) > 4 << 20
    b.close()


def test_a_get_that_times_out_empty_trims(namespace: str) -> None:
    """A consumer that waited and got nothing gives the idle queue's memory back."""
    b = zoldyq.create(namespace, max_bytes=RING_BYTES)
    q = b.queue("t")
    fill_and_drain(q)
    while q.get_many(1000):
        pass
    assert q.get(timeout=0.05) is None
    assert shm_bytes(q) <= 64 << 10
    b.close()


def test_clear_trims_and_fifo_survives_many_trims(namespace: str) -> None:
    """clear() trims; put/get across repeated trims keep every message in order."""
    b = zoldyq.create(namespace, max_bytes=RING_BYTES)
    q = b.queue("t")
    fill_and_drain(q)
    assert q.clear() == 40_000
    assert shm_bytes(q) <= 64 << 10
    for rnd in range(5):
        q.put_many([[rnd, i] for i in range(3000)])
        assert [m.payload for m in q.get_many(3000)] == [[rnd, i] for i in range(3000)]
        assert q.get(timeout=0.01) is None  # trims
        assert shm_bytes(q) <= 64 << 10
    assert q.stats()["reserved_bytes"] == 32 << 10
    b.close()


@pytest.mark.parametrize("point", ["trim.moved", "trim.lowered"])
def test_a_trimmer_killed_midway_leaves_a_working_queue(
    point: str, namespace: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9 between the trimmer's steps: the next holders repair, nothing is lost."""
    b = zoldyq.create(namespace, max_bytes=RING_BYTES)
    q = b.queue("t")
    q.put_many(["x"] * 5000)
    q.get_many(5000)
    marker = tmp_path / "paused"
    env = {**os.environ, "ZOLDYQ_TEST_PAUSE": point, "ZOLDYQ_TEST_PAUSE_FILE": str(marker)}
    proc = spawn("do", namespace, "t", "clear", env=env)  # clear() trims the empty queue
    procs.append(proc)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, "the trimmer exited before its pause point"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.kill()
    proc.wait(10)
    q.put_many(["a", "b"])  # repairs the put side (offsets of the empty ring)
    assert [m.payload for m in q.get_many(10)] == ["a", "b"]
    for i in range(200):
        q.put(i)
    assert [m.payload for m in q.get_many(500)] == list(range(200))
    assert q._sq.put_lock.repairs == 1  # type: ignore[union-attr]
    b.close()
