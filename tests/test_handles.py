"""Deleted queues release their descriptors and ring memory in every process that used them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time

import zoldyq
from tests.helpers import servers


def _worker(master: int) -> int:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True,
                         text=True, check=True).stdout.split()
    (pid,) = map(int, out)
    return pid


def _usage(pid: int, namespace: str) -> tuple[int, int]:
    """(open fds, mappings of the namespace's /dev/shm objects) of process ``pid``."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for line in f if f"/dev/shm/zoldyq.{namespace}" in line)
    return fds, maps


def _cycle(srv: servers.Server, i: int) -> None:
    name = f"c{i % 7}"
    assert srv.call("PUT", f"/queues/{name}").status == 201
    for _ in range(3):
        assert srv.call("POST", f"/queues/{name}/enqueue", body=b"x" * 50_000,
                        headers={"Content-Type": "application/octet-stream"}).status == 200
    assert srv.call("GET", f"/queues/{name}/dequeue").status == 200
    assert srv.call("DELETE", f"/queues/{name}").status == 200


def test_create_fill_delete_cycles_keep_a_workers_fds_and_mappings_flat(
        namespace: str) -> None:
    """Hundreds of HTTP create/fill/delete cycles leave one worker's open fds and its
    mappings of /dev/shm objects bounded by the live queues, not by the history."""
    with servers.gunicorn(namespace, workers=1) as srv:
        worker = _worker(srv.pid)
        for i in range(30):
            _cycle(srv, i)
        before = _usage(worker, namespace)
        for i in range(30, 330):
            _cycle(srv, i)
        after = _usage(worker, namespace)
        assert after[0] <= before[0] + 6, (before, after)
        assert after[1] <= before[1] + 2, (before, after)
        assert srv.stop() == 0


def test_a_queue_deleted_elsewhere_is_released_here_once_touched(namespace: str) -> None:
    """A process whose handles point at queues another process deletes closes them the
    next time it touches the name (no 30 s list of retired mappings), threads included."""
    mine = zoldyq.create(namespace, max_queues=8, max_bytes=1 << 20)
    other = zoldyq.attach(namespace)
    try:
        def cycle(i: int) -> None:
            q = mine.queue(f"t{i % 4}")
            # another thread's delete won: a put whose queue was deleted twice under it
            # (it follows the name once) is refused QueueDeleted, a get or delete after
            # the name is gone QueueNotFound
            with contextlib.suppress(zoldyq.QueueNotFound, zoldyq.QueueDeleted):
                q.put_bytes(b"y" * 10_000)
                q.get()
                other.delete(q.name)

        for i in range(20):
            cycle(i)
        before = _usage(os.getpid(), namespace)
        errors: list[BaseException] = []

        def cycles(k: int) -> None:
            try:
                for j in range(50):
                    cycle(k * 1000 + j)
            except BaseException as e:  # the test thread asserts on it
                errors.append(e)

        threads = [threading.Thread(target=cycles, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for i in range(4):
            mine.queue(f"t{i}").put(0)  # touch every name once more
        deadline = time.monotonic() + 3  # a handle busy when retired is swept a second later
        while (after := _usage(os.getpid(), namespace)) > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert after[0] <= before[0], (before, after)
        assert after[1] <= before[1], (before, after)
    finally:
        other.close()
        mine.close()


def test_a_cached_handle_on_a_closed_queue_never_reads_released_memory(
        namespace: str) -> None:
    """A Queue whose shared queue this process already closed (deleted elsewhere) follows
    the name on the paths that read without a lock too (an empty batch, an asyncio wait):
    found by schemathesis as a 500 "operation forbidden on released memoryview"."""
    mine = zoldyq.create(namespace, max_queues=4, max_bytes=1 << 20)
    other = zoldyq.attach(namespace)
    try:
        q = mine.queue("b")
        q.put(1)
        other.delete("b")
        mine.queue("b").put(2)  # resolves the name again: the old handle is closed now
        assert q._sq is not None
        assert q._sq.closed
        assert q.put_many([]).queue_size == 1
        assert [m.payload for m in q.get_many(10)] == [2]
    finally:
        other.close()
        mine.close()

