"""Registry changes that fail half-way are finished or undone by the next holder."""

from __future__ import annotations

import errno

import pytest

import zoldyq
from zoldyq.shm import names, segment
from zoldyq.shm.layout import DELETING, FREE
from zoldyq.shm.queue import SharedQueue


def _fail_once(monkeypatch: pytest.MonkeyPatch, name: str, exc: BaseException) -> None:
    """The next call of ``segment.<name>`` raises ``exc``; later calls work."""
    real = getattr(segment, name)
    calls = [0]

    def flaky(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == 1:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(segment, name, flaky)


def test_a_delete_that_fails_half_way_is_finished_by_the_next_holder(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """EMFILE in the middle of a delete leaves the registry lock dirty: the next registry
    change finishes the delete, so there is never a zombie queue taking messages nobody
    can find, nor two queues with one name."""
    broker = zoldyq.create(namespace, max_queues=4, max_bytes=1 << 20)
    other = zoldyq.attach(namespace)
    try:
        broker.queue("jobs").put(1)
        cached = other.queue("jobs")
        cached.put(2)  # ``other`` now holds a handle on the old queue
        _fail_once(monkeypatch, "open_shm", OSError(errno.EMFILE, "Too many open files"))
        with pytest.raises(OSError, match="Too many open files"):
            broker.delete("jobs")
        monkeypatch.undo()
        reg = broker.registry
        assert [reg._state(s)[1] for s in range(reg.max_queues)].count(DELETING) == 1
        other.queue("fresh").put(0)  # the next holder of the registry lock repairs
        assert [reg._state(s)[1] for s in range(reg.max_queues)].count(DELETING) == 0
        cached.put(3)  # the old queue is closed: the handle follows the name to a new one
        broker.queue("jobs").put(4)
        assert broker.queues() == ["fresh", "jobs"]
        assert [m.payload for m in broker.queue("jobs").get_many(10)] == [3, 4]
        left = segment.leftovers(names.registry(namespace))
        assert len(left) == 1 + 2 * 2, left  # the registry segment + two queues' ring and bell
    finally:
        other.close()
        broker.close()


def test_a_create_whose_rollback_fails_is_undone_by_the_next_holder(
        namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queue creation that fails, and whose rollback fails too, leaves the lock dirty;
    the next registry change removes the half-created queue's objects and frees its slot."""
    broker = zoldyq.create(namespace, max_queues=1, max_bytes=1 << 20)
    try:
        real_create = SharedQueue.create

        def create_then_fail(ns: str, slot: int, gen: int, *caps: int) -> None:
            real_create(ns, slot, gen, *caps)
            _fail_once(monkeypatch, "unlink_sem", OSError(errno.EIO, "I/O error"))
            raise OSError(errno.EMFILE, "Too many open files")

        monkeypatch.setattr(SharedQueue, "create", staticmethod(create_then_fail))
        with pytest.raises(OSError, match="I/O error"):
            broker.queue("half").put(1)
        monkeypatch.undo()
        broker.queue("whole").put(1)  # max_queues=1: only possible once the slot is freed
        assert broker.queues() == ["whole"]
        reg = broker.registry
        assert reg._state(0)[1] != FREE
        assert len(segment.leftovers(names.registry(namespace))) == 1 + 2
    finally:
        broker.close()
