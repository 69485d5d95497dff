"""The robust lock: threads and forked children are excluded; a dead holder is repaired."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.namespaces import unique_namespace
from zoldyq.shm.lock import RobustLock


@pytest.fixture
def lock_names() -> Iterator[tuple[str, str]]:
    base = f"/zoldyq.{unique_namespace()}.lk"
    RobustLock.create(base + "f", base + "s")
    yield base + "f", base + "s"
    RobustLock.unlink(base + "f", base + "s")


def test_threads_never_overlap(lock_names: tuple[str, str]) -> None:
    """Eight threads doing read-yield-write under the lock lose no increment."""
    lock = RobustLock(*lock_names, on_dirty=lambda: None)
    box = [0]

    def work() -> None:
        for _ in range(300):
            with lock:
                value = box[0]
                time.sleep(0)  # invite a switch inside the critical section
                box[0] = value + 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert box[0] == 2400
    assert lock.repairs == 0
    lock.close()


def test_a_forked_child_does_not_share_the_parents_hold(lock_names: tuple[str, str]) -> None:
    """A child forked while the parent holds the lock waits for the parent's release.

    flock belongs to the open file description, which fork shares: the child
    must open its own or it would walk straight in.
    """
    lock = RobustLock(*lock_names, on_dirty=lambda: None)
    read_fd, write_fd = os.pipe()
    lock.acquire()
    pid = os.fork()
    if pid == 0:  # child: report how long the acquire took
        try:
            t0 = time.monotonic()
            lock.acquire()
            os.write(write_fd, f"{time.monotonic() - t0:.3f}".encode())
            lock.release()
        finally:
            os._exit(0)
    time.sleep(0.3)
    lock.release()
    waited = float(os.read(read_fd, 64))
    os.waitpid(pid, 0)
    os.close(read_fd)
    os.close(write_fd)
    assert waited >= 0.25
    lock.close()


def test_a_holder_killed_inside_is_repaired_once(lock_names: tuple[str, str]) -> None:
    """The next holder after a kill -9 inside runs on_dirty exactly once, then all is clean."""
    repaired: list[int] = []
    lock = RobustLock(*lock_names, on_dirty=lambda: repaired.append(1))
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    t0 = time.monotonic()
    with lock:
        pass
    with lock:
        pass
    assert time.monotonic() - t0 < 1.0
    assert repaired == [1]
    assert lock.repairs == 1
    lock.close()


def test_a_failed_repair_leaves_the_lock_dirty(lock_names: tuple[str, str]) -> None:
    """If on_dirty raises, the lock is released still dirty, and the next holder repairs."""
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("repair failed")

    lock = RobustLock(*lock_names, on_dirty=flaky)
    pid = os.fork()
    if pid == 0:
        lock.acquire()
        os.kill(os.getpid(), signal.SIGKILL)
    os.waitpid(pid, 0)
    with pytest.raises(RuntimeError, match="repair failed"):
        lock.acquire()
    with lock:
        pass
    assert len(calls) == 2
    lock.close()


def _hold_in_child(lock: RobustLock) -> tuple[int, int]:
    """Fork a child that takes the lock and keeps it; returns (pid, fd to release it)."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            lock.acquire()
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            lock.release()
        finally:
            os._exit(0)
    assert os.read(ready_r, 1) == b"x"
    for fd in (ready_r, ready_w, go_r):
        os.close(fd)
    return pid, go_w


def test_never_wait_raises_lock_busy_at_once(lock_names: tuple[str, str]) -> None:
    """A thread that may not wait gets LockBusy within milliseconds, and the lock is untouched."""
    from zoldyq.shm.lock import LockBusy, never_wait

    lock = RobustLock(*lock_names, on_dirty=lambda: None)
    pid, release = _hold_in_child(lock)
    try:
        t0 = time.monotonic()
        with never_wait(), pytest.raises(LockBusy):
            lock.acquire()
        assert time.monotonic() - t0 < 0.05
    finally:
        os.write(release, b"x")
        os.close(release)
        os.waitpid(pid, 0)
    with never_wait(), lock:  # free again: no wait needed, and nothing to repair
        pass
    assert lock.repairs == 0
    lock.close()


def test_wait_until_gives_up_at_its_deadline(lock_names: tuple[str, str]) -> None:
    """A thread with a deadline waits for a live holder until then, and gets it if freed in time."""
    from zoldyq.shm.lock import LockBusy, wait_until

    lock = RobustLock(*lock_names, on_dirty=lambda: None)
    pid, release = _hold_in_child(lock)
    t0 = time.monotonic()
    with wait_until(t0 + 0.3), pytest.raises(LockBusy):
        lock.acquire()
    assert 0.29 <= time.monotonic() - t0 < 1.0
    threading.Timer(0.2, os.write, (release, b"x")).start()
    with wait_until(time.monotonic() + 5.0), lock:
        pass
    os.close(release)
    os.waitpid(pid, 0)
    lock.close()


def test_never_wait_covers_a_thread_of_the_same_process(lock_names: tuple[str, str]) -> None:
    """Another thread of this process parked on the lock does not make a never-wait thread wait."""
    from zoldyq.shm.lock import LockBusy, never_wait

    lock = RobustLock(*lock_names, on_dirty=lambda: None)
    pid, release = _hold_in_child(lock)
    parked = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    parked.start()
    time.sleep(0.1)  # it holds the thread lock and sleeps in flock
    t0 = time.monotonic()
    with never_wait(), pytest.raises(LockBusy):
        lock.acquire()
    assert time.monotonic() - t0 < 0.05
    os.write(release, b"x")
    os.close(release)
    os.waitpid(pid, 0)
    parked.join(10)
    lock.close()
