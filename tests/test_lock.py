"""The robust lock: threads and forked children are excluded; a dead holder is repaired."""

from __future__ import annotations

import contextlib
import mmap
import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest

from zoldyq.shm.lock import RobustLock


@pytest.fixture
def shared() -> Iterator[mmap.mmap]:
    """Shared memory that forked children see too, holding one formatted lock at 0."""
    mm = mmap.mmap(-1, 4096)  # MAP_SHARED | MAP_ANONYMOUS
    RobustLock.format(mm, 0)
    yield mm
    with contextlib.suppress(BufferError):  # a test that failed left a lock open
        mm.close()


def test_threads_never_overlap(shared: mmap.mmap) -> None:
    """Eight threads doing read-yield-write under the lock lose no increment."""
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
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


def test_a_forked_child_does_not_share_the_parents_hold(shared: mmap.mmap) -> None:
    """A child forked while the parent holds the lock waits for the parent's release.

    The mutex belongs to the parent's thread; the child's thread has a TID of its own.
    """
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
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


def test_a_holder_killed_inside_is_repaired_once(shared: mmap.mmap) -> None:
    """The next holder after a kill -9 inside runs on_dirty exactly once, then all is clean."""
    repaired: list[int] = []
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: repaired.append(1))
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


def test_a_failed_repair_leaves_the_lock_dirty(shared: mmap.mmap) -> None:
    """If on_dirty raises, the lock is released still dirty, and the next holder repairs."""
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("repair failed")

    lock = RobustLock(shared, 0, "lock", on_dirty=flaky)
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


def test_never_wait_raises_lock_busy_at_once(shared: mmap.mmap) -> None:
    """A thread that may not wait gets LockBusy within milliseconds, and the lock is untouched."""
    from zoldyq.shm.lock import LockBusy, never_wait

    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
    pid, release = _hold_in_child(lock)
    try:
        t0 = time.monotonic()
        with never_wait(), pytest.raises(LockBusy):
            lock.acquire()
        assert time.monotonic() - t0 < 0.5  # a few sched_yields: slow only on a loaded box
    finally:
        os.write(release, b"x")
        os.close(release)
        os.waitpid(pid, 0)
    with never_wait(), lock:  # free again: no wait needed, and nothing to repair
        pass
    assert lock.repairs == 0
    lock.close()


def test_wait_until_gives_up_at_its_deadline(shared: mmap.mmap) -> None:
    """A thread with a deadline waits for a live holder until then, and gets it if freed in time."""
    from zoldyq.shm.lock import LockBusy, wait_until

    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
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


def test_never_wait_covers_a_thread_of_the_same_process(shared: mmap.mmap) -> None:
    """Another thread of this process parked on the lock does not make a never-wait thread wait."""
    from zoldyq.shm.lock import LockBusy, never_wait

    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
    pid, release = _hold_in_child(lock)
    parked = threading.Thread(target=lambda: (lock.acquire(), lock.release()))
    parked.start()
    time.sleep(0.1)  # it sleeps in the kernel, waiting for the mutex
    t0 = time.monotonic()
    with never_wait(), pytest.raises(LockBusy):
        lock.acquire()
    assert time.monotonic() - t0 < 0.5  # a few sched_yields: slow only on a loaded box
    os.write(release, b"x")
    os.close(release)
    os.waitpid(pid, 0)
    parked.join(10)
    lock.close()


def test_a_waiter_gets_the_lock_when_its_holder_is_killed(shared: mmap.mmap) -> None:
    """A thread parked on the mutex is woken by the kernel when the holder dies, takes it
    (EOWNERDEAD) and repairs once."""
    repaired: list[int] = []
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: repaired.append(1))
    pid, release = _hold_in_child(lock)
    os.close(release)
    took: list[float] = []

    def wait() -> None:
        with lock:
            took.append(time.monotonic())

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.2)
    assert not took  # parked: the holder is alive
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    waiter.join(10)
    assert took
    assert took[0] - killed < 1.0
    assert repaired == [1]
    lock.close()


def test_dirty_on_error_makes_the_next_holder_repair(shared: mmap.mmap) -> None:
    """A holder that raises inside dirty_on_error releases; the next holder (here the same
    process, on another handle as another process would) repairs once, then all is clean."""
    repaired: list[str] = []
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: repaired.append("a"))
    other = RobustLock(shared, 0, "lock", on_dirty=lambda: repaired.append("b"))
    with pytest.raises(ValueError, match="half done"), lock, lock.dirty_on_error():
        raise ValueError("half done")
    with other:
        pass
    with lock:
        pass
    assert repaired == ["b"]
    lock.close()
    other.close()


def test_taking_it_twice_in_one_thread_raises_instead_of_hanging(shared: mmap.mmap) -> None:
    """The mutex is error-checking: a re-entrant acquire is a bug, reported at once."""
    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
    with lock:
        with pytest.raises(RuntimeError, match="deadlock"):
            lock.acquire()
        assert lock.locked()
    assert not lock.locked()
    lock.close()


def test_a_closed_lock_refuses_and_lets_the_mapping_go(shared: mmap.mmap) -> None:
    """After close() an acquire is a ClosedError and the mapping can be closed."""
    from zoldyq.errors import ClosedError

    lock = RobustLock(shared, 0, "lock", on_dirty=lambda: None)
    lock.close()
    with pytest.raises(ClosedError):
        lock.acquire()
    shared.close()
