"""One queue as this process sees it: ring + two robust locks + doorbell + stats.

Producers serialise on the put lock and consumers on the get lock; the two
sides share only the ring's committed words (see ``ring``), so one producer
and one consumer never wait for each other.

Waiting (no polling): a consumer that finds the ring empty registers in
``waiters`` under the get lock, releases it, re-reads the tail and sleeps on
the doorbell semaphore. A producer commits its tail, releases the put lock
and then reads ``waiters``; if any, it posts the doorbell (at most up to
``waiters``, so the count stays bounded). Both sides pass a ``sem_post``
(a locked instruction, a full fence on x86) between their write and their
read, so at least one sees the other: no lost wake-up. Spurious wake-ups are
fine: a woken consumer re-checks the ring.
"""

from __future__ import annotations

import contextlib
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence

from zoldyq.errors import BrokenError, QueueDeleted, QueueFull
from zoldyq.shm import hooks, names, segment
from zoldyq.shm.layout import (
    FLAG_CLOSED,
    HEADER_BYTES,
    HIST_BOUNDS_NS,
    HIST_BUCKETS,
    LAYOUT_VERSION,
    QUEUE_MAGIC,
    W_BYTES_IN,
    W_BYTES_OUT,
    W_CLEARED,
    W_CREATED_AT,
    W_DEQ_HIST,
    W_DEQ_TOTAL,
    W_ENQ_HIST,
    W_ENQ_TOTAL,
    W_FLAGS,
    W_FULL_TOTAL,
    W_MAGIC,
    W_MAX_MESSAGE_BYTES,
    W_MAX_MESSAGES,
    W_RESERVED,
    W_RING_SIZE,
    W_SLOT_GEN,
    W_TIMEOUTS,
    W_VERSION,
    W_WAITERS,
)
from zoldyq.shm.lock import RobustLock
from zoldyq.shm.ring import Record, Ring, RingCorrupt, RingFull

RESERVE_CHUNK = 1 << 20  # ring memory is backed 1 MiB at a time as it is first used
WAIT_SLICE = 0.5  # sem_timedwait uses the wall clock: wait in slices of a monotonic deadline
SPIN_SECONDS = 50e-6  # how long an empty get watches the tail before parking

_HOOKED = hooks.ENABLED  # crash tests only
_BusyError = segment.Busy
_SignalError = segment.Interrupted
_monotonic = time.monotonic
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns


def _payload_bytes(records: Sequence[tuple[int, bytes]]) -> int:
    return sum(len(data) for _, data in records)


class SharedQueue:
    """Attach to queue ``slot``/``gen`` of namespace ``ns``.

    Raises segment.Gone if its objects are gone (deleted).
    """

    def __init__(self, ns: str, slot: int, gen: int, name: str) -> None:
        self.name = name
        self.slot, self.gen = slot, gen
        self._objects = objs = names.queue_objects(ns, slot, gen)
        self._mm = segment.map_shm(segment.open_shm(objs["ring"]))
        opened: list[RobustLock] = []
        try:  # deleted meanwhile (or refused): release what was opened, now, not at GC
            view = memoryview(self._mm)
            self.words = words = view[:HEADER_BYTES].cast("Q")
            if words[W_MAGIC] != QUEUE_MAGIC or words[W_VERSION] != LAYOUT_VERSION:
                raise BrokenError(f"queue segment {objs['ring']} has an unknown layout")
            if words[W_SLOT_GEN] != (slot << 32 | gen):
                raise BrokenError(f"queue segment {objs['ring']} belongs to another slot")
            self.ring = Ring(words, view[HEADER_BYTES : HEADER_BYTES + words[W_RING_SIZE]],
                             self._reserve, source=self._mm, base=HEADER_BYTES)
            self.max_message_bytes = words[W_MAX_MESSAGE_BYTES]
            self.put_lock = RobustLock(objs["put_file"], objs["put_sem"],
                                       self.ring.repair_put_side)
            opened.append(self.put_lock)
            self.get_lock = RobustLock(objs["get_file"], objs["get_sem"],
                                       self.ring.repair_get_side)
            opened.append(self.get_lock)
            self.bell = segment.open_sem(objs["bell"])
        except BaseException:
            for lock in opened:
                lock.close()
            for attr in ("ring", "words"):
                v = getattr(self, attr, None)
                if v is not None:
                    (v.data if attr == "ring" else v).release()
            with contextlib.suppress(BufferError, NameError):
                view.release()
            with contextlib.suppress(BufferError):
                self._mm.close()
            raise
        self._local_waiters = 0
        self._waiters_lock = threading.Lock()
        self.interrupted = False
        self.closed = False

    # -- lifecycle -------------------------------------------------------------

    @staticmethod
    def create(
        ns: str, slot: int, gen: int, max_messages: int, max_bytes: int, max_message_bytes: int
    ) -> None:
        """Create the objects of a new, empty queue (the registry holds its lock)."""
        objs = names.queue_objects(ns, slot, gen)
        SharedQueue.unlink(ns, slot, gen)  # leftovers of a creator that died
        shm = segment.create_shm(objs["ring"], HEADER_BYTES + max_bytes, HEADER_BYTES)
        mm = segment.map_shm(shm)
        try:
            words = memoryview(mm)[:HEADER_BYTES].cast("Q")
            Ring.format(words, max_bytes, max_messages, max_message_bytes)
            words[W_CREATED_AT] = _time_ns() // 1000
            words[W_SLOT_GEN] = slot << 32 | gen
            words[W_VERSION] = LAYOUT_VERSION
            words[W_MAGIC] = QUEUE_MAGIC  # last: a segment with magic is complete
            words.release()
        finally:
            mm.close()
        RobustLock.create(objs["put_file"], objs["put_sem"])
        RobustLock.create(objs["get_file"], objs["get_sem"])
        segment.create_sem(objs["bell"], 0).close()

    @staticmethod
    def unlink(ns: str, slot: int, gen: int) -> None:
        objs = names.queue_objects(ns, slot, gen)
        for key in ("ring", "put_file", "get_file"):
            segment.unlink_shm(objs[key])
        for key in ("put_sem", "get_sem", "bell"):
            segment.unlink_sem(objs[key])

    def mark_deleted(self) -> None:
        """Close the queue for every process: later puts and gets raise QueueDeleted."""
        with self.put_lock, self.get_lock:
            self.words[W_FLAGS] |= FLAG_CLOSED
        for _ in range(self.words[W_WAITERS] + 1):
            self.bell.release()  # every parked consumer, in any process, wakes and sees it

    @property
    def deleted(self) -> bool:
        try:
            return bool(self.words[W_FLAGS] & FLAG_CLOSED)
        except ValueError:  # closed here: its views are released
            return True

    @property
    def busy(self) -> bool:
        """A thread of this process is inside one of its locks or parked on its bell.

        The broker closes a retired handle only when it is not busy; a thread
        that picks it up afterwards gets ClosedError (or QueueDeleted) and
        re-resolves the name.
        """
        return bool(self._local_waiters) or self.put_lock.locked() or self.get_lock.locked()

    def close(self) -> None:
        """Wake and wait out this process's waiters, then drop the handles.

        A semaphore closed under a thread blocked on it would crash the
        process, so the doorbell stays open if a waiter does not leave.
        """
        if self.closed:
            return
        self.closed = True
        self.interrupt()
        self.put_lock.close()
        self.get_lock.close()
        if not self._local_waiters:
            self.bell.close()
        self.ring.data.release()  # type: ignore[union-attr]
        self.words.release()
        with contextlib.suppress(BufferError):  # a view is still out; unmapped with it
            self._mm.close()

    def _reserve(self, upto: int) -> None:
        """Back ring bytes [reserved, upto) rounded up to a chunk (put lock held)."""
        words = self.words
        have = words[W_RESERVED]
        want = min(words[W_RING_SIZE], -(-upto // RESERVE_CHUNK) * RESERVE_CHUNK)
        try:
            shm = segment.open_shm(self._objects["ring"])
        except segment.Gone:
            raise QueueDeleted(self.name) from None
        try:
            segment.reserve(shm.fd, HEADER_BYTES + have, want - have)
        finally:
            shm.close_fd()
        words[W_RESERVED] = want

    # -- put -------------------------------------------------------------------

    def put(self, records: Sequence[tuple[int, bytes]], t0: int) -> tuple[int, int]:
        """Append ``records`` (kind, payload) atomically, all or none.

        ``t0`` is ``perf_counter_ns()`` when the caller started (for the
        latency histogram). Returns (queue size after, enqueued_at µs).
        """
        words, ring = self.words, self.ring
        lock = self.put_lock
        lock.acquire()
        try:
            if words[W_FLAGS] & FLAG_CLOSED:
                raise QueueDeleted(self.name)
            if _HOOKED:
                hooks.reach("put.locked")
            now_us = _time_ns() // 1000
            try:
                new_tail = ring.write(records, now_us)
            except RingFull as full:
                words[W_FULL_TOTAL] += 1
                raise QueueFull(
                    self.name, ring.max_messages, full.count, ring.size, full.needed_bytes
                ) from None
            if _HOOKED:
                hooks.reach("put.written")
            n = len(records)
            ring.commit_tail(new_tail, n, len(records[0][1]) if n == 1 else _payload_bytes(records))
            if _HOOKED:
                hooks.reach("put.committed")
            elapsed = _perf_ns() - t0
            words[W_ENQ_HIST + bisect_left(HIST_BOUNDS_NS, elapsed)] += 1
            words[W_ENQ_HIST + HIST_BUCKETS] += elapsed
            size = ring.count()
        finally:
            lock.release()
        try:
            waiters = words[W_WAITERS]
            if waiters:
                self._ring_bell(min(n, waiters))
        except (ValueError, segment.Closed):
            pass  # closed here since the put (deleted): nobody is left to wake
        return size, now_us

    def _ring_bell(self, times: int) -> None:
        bell = self.bell
        for _ in range(times - bell.value):
            bell.release()

    # -- get -------------------------------------------------------------------

    def _take(
        self, max_n: int, t0: int, was_waiting: bool, keep_waiting: bool, tag: object = None
    ) -> list[Record]:
        """Pop up to ``max_n`` under the get lock and (un)register as a waiter."""
        words, ring = self.words, self.ring
        lock = self.get_lock
        lock.acquire()
        try:
            if words[W_FLAGS] & FLAG_CLOSED:
                raise QueueDeleted(self.name)  # a waiter unregisters in get()'s finally
            if _HOOKED:
                hooks.reach("get.locked")
            try:
                records, new_head, nbytes = ring.read(max_n, tag)
            except RingCorrupt as ex:
                raise BrokenError(f"queue '{self.name}': {ex}") from ex
            if records:
                if _HOOKED:
                    hooks.reach("get.read")
                ring.commit_head(new_head, len(records), nbytes)
                if _HOOKED:
                    hooks.reach("get.committed")
                elapsed = _perf_ns() - t0
                words[W_DEQ_HIST + bisect_left(HIST_BOUNDS_NS, elapsed)] += 1
                words[W_DEQ_HIST + HIST_BUCKETS] += elapsed
            if was_waiting or keep_waiting:
                wait = keep_waiting and not records
                if wait != was_waiting:
                    if wait:
                        words[W_WAITERS] += 1
                    elif words[W_WAITERS]:
                        words[W_WAITERS] -= 1
                if was_waiting and not keep_waiting and not records:
                    words[W_TIMEOUTS] += 1
        finally:
            lock.release()
        return records

    def get(self, max_n: int, timeout: float, tag: object = None) -> list[Record]:
        """Take up to ``max_n`` records, waiting up to ``timeout`` seconds for the first."""
        if self.interrupted:
            timeout = 0.0
        records = self._take(max_n, _perf_ns(), False, False, tag)
        if records or timeout <= 0:
            return records
        deadline = _monotonic() + timeout
        # A busy producer is usually microseconds away: look again before parking,
        # which costs both sides a system call and this side a context switch.
        if self._spin(min(SPIN_SECONDS, timeout)):
            records = self._take(max_n, _perf_ns(), False, False, tag)
            if records:
                return records
        records = self._take(max_n, _perf_ns(), False, True, tag)
        if records:
            return records
        waiting = True
        with self._waiters_lock:
            self._local_waiters += 1
        try:
            while True:
                self._park(deadline)
                stay = not self.interrupted and _monotonic() < deadline
                records = self._take(max_n, _perf_ns(), True, stay, tag)
                waiting = stay and not records
                if not waiting:
                    return records
        finally:
            with self._waiters_lock:
                self._local_waiters -= 1
            if waiting:  # left by an exception: parked when interrupted, or queue deleted
                self._register(-1)

    def _spin(self, seconds: float) -> bool:
        """Watch the tail for ``seconds`` without any lock; True once there is a message."""
        count = self.ring.count
        end = _perf_ns() + int(seconds * 1e9)
        try:
            while _perf_ns() < end:
                for _ in range(16):
                    if count():
                        return True
        except ValueError:  # closed here meanwhile (deleted): its views are released
            raise QueueDeleted(self.name) from None
        return False

    def _park(self, deadline: float) -> None:
        """Sleep until the doorbell rings, the ring is non-empty or the deadline passes."""
        try:
            if self.ring.count():
                return
            remaining = deadline - _monotonic()
            if remaining <= 0 or self.interrupted:
                return
            with contextlib.suppress(_BusyError, _SignalError):
                self.bell.acquire(min(remaining, WAIT_SLICE))
        except (ValueError, segment.Closed):  # closed here meanwhile (deleted)
            raise QueueDeleted(self.name) from None

    def wait_bell(self, timeout: float) -> bool:
        """Sleep as a registered waiter until the doorbell rings; False on timeout.

        Returns at once if the ring already holds messages. For a thread
        that waits on behalf of others (``aio``); it takes nothing.
        """
        self._register(1)
        with self._waiters_lock:
            self._local_waiters += 1
        try:
            if self.ring.count():
                return True
            try:
                self.bell.acquire(timeout)
            except (_BusyError, _SignalError):
                return False
            return True
        finally:
            with self._waiters_lock:
                self._local_waiters -= 1
            self._register(-1)

    def pass_bell(self) -> None:
        """Hand a ring we took but cannot use to another waiter."""
        if self.words[W_WAITERS] and self.ring.count():
            self._ring_bell(1)

    def _register(self, delta: int) -> None:
        words = self.words
        with self.get_lock:
            if delta > 0 and words[W_FLAGS] & FLAG_CLOSED:
                raise QueueDeleted(self.name)
            if delta > 0 or words[W_WAITERS]:
                words[W_WAITERS] += delta

    def interrupt(self) -> None:
        """Wake this process's waiters now; later gets in this process do not wait."""
        self.interrupted = True
        deadline = _monotonic() + 1.0
        while self._local_waiters and _monotonic() < deadline:
            self._ring_bell(max(self.words[W_WAITERS], 1))
            time.sleep(0.0005)

    def peek(self, max_n: int, tag: object = None) -> list[Record]:
        """Up to ``max_n`` records from the head, left in place (snapshots)."""
        with self.get_lock:
            if self.deleted:
                raise QueueDeleted(self.name)
            return self.ring.read(max_n, tag)[0]

    def note_timeout(self) -> None:
        """Count a get that waited and found nothing (asyncio waiters count here)."""
        with self.get_lock:
            self.words[W_TIMEOUTS] += 1

    def clear(self) -> int:
        with self.get_lock:
            if self.deleted:
                raise QueueDeleted(self.name)
            return self.ring.clear()

    # -- stats: racy reads of single words, never the lock -----------------------

    def stats(self) -> dict[str, object]:
        try:
            return self._stats()
        except ValueError:  # closed here meanwhile (deleted)
            raise QueueDeleted(self.name) from None

    def _stats(self) -> dict[str, object]:
        w = self.words
        removed, cleared = w[W_DEQ_TOTAL], w[W_CLEARED]
        return {
            "size": self.ring.count(),
            "capacity": w[W_MAX_MESSAGES],
            "bytes": self.ring.used_bytes(),
            "max_bytes": w[W_RING_SIZE],
            "max_message_bytes": w[W_MAX_MESSAGE_BYTES],
            "enqueued_total": w[W_ENQ_TOTAL],
            "dequeued_total": max(0, removed - cleared),
            "cleared_total": cleared,
            "queue_full_total": w[W_FULL_TOTAL],
            "dequeue_timeout_total": w[W_TIMEOUTS],
            "bytes_in_total": w[W_BYTES_IN],
            "bytes_out_total": w[W_BYTES_OUT],
            "waiters": w[W_WAITERS],
            "reserved_bytes": w[W_RESERVED],
            "created_at": w[W_CREATED_AT],
            "enqueue_histogram": list(w[W_ENQ_HIST : W_ENQ_HIST + HIST_BUCKETS + 1]),
            "dequeue_histogram": list(w[W_DEQ_HIST : W_DEQ_HIST + HIST_BUCKETS + 1]),
        }
