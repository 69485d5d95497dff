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
import mmap
import struct
import threading
import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from zoldyq.errors import BrokenError, QueueDeleted, QueueFull
from zoldyq.shm import hooks, names, segment, speedups
from zoldyq.shm.layout import (
    FLAG_CLOSED,
    HEADER_BYTES,
    HIST_BOUNDS_NS,
    HIST_BUCKETS,
    LAYOUT_VERSION,
    QUEUE_MAGIC,
    SLOT_W,
    SW_ACKED,
    SW_BATCH,
    SW_BYTES,
    SW_DEAD_TOTAL,
    SW_DELAYED,
    SW_DRES,
    SW_DSIZE,
    SW_DUE,
    SW_LEASED,
    SW_NSLOTS,
    SW_READY,
    SW_REDELIVERED,
    SW_REQUEUED,
    SW_SRES,
    TRIM_AGE_US,
    TRIM_KEEP,
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
    W_GET_LOCK,
    W_HEAD,
    W_MAGIC,
    W_MAX_MESSAGE_BYTES,
    W_MAX_MESSAGES,
    W_PUT_LOCK,
    W_RESERVED,
    W_RING_SIZE,
    W_SLOT_GEN,
    W_TABLE,
    W_TAIL,
    W_TIMEOUTS,
    W_VERSION,
    W_WAITERS,
    table_bytes,
)
from zoldyq.shm.lock import LockBusy, RobustLock, never_wait, patient
from zoldyq.shm.ring import Record, Ring, RingCorrupt, RingFull, decode, record_bytes
from zoldyq.shm.side import (
    DEAD,
    DELAYED,
    FREE,
    IN,
    LEASED,
    READY,
    REDRIVE,
    S_DEADLINE,
    S_ENQ,
    S_KEY,
    S_ORIGIN,
    S_SEQ,
    STAGED,
    Side,
    SideFull,
)

PAGE = mmap.PAGESIZE
RESERVE_CHUNK = 1 << 20  # ring memory is backed 1 MiB at a time as it is first used
WAIT_SLICE = 0.5  # sem_timedwait uses the wall clock: wait in slices of a monotonic deadline
SPIN_SECONDS = 50e-6  # how long an empty get watches the tail before parking

_HOOKED = hooks.ENABLED  # crash tests only
_BusyError = segment.Busy
_SignalError = segment.Interrupted
_monotonic = time.monotonic
_perf_ns = time.perf_counter_ns
_time_ns = time.time_ns


def _pages(n: int) -> int:
    """``n`` rounded up to whole pages."""
    return -(-n // PAGE) * PAGE


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
            table_at = words[W_TABLE]
            self.ring = Ring(words, view[HEADER_BYTES : HEADER_BYTES + words[W_RING_SIZE]],
                             view[table_at : table_at + table_bytes(words[W_RING_SIZE])].cast("Q"),
                             self._reserve, source=self._mm, base=HEADER_BYTES)
            self._side_base = base = HEADER_BYTES + words[W_RING_SIZE]
            slot_bytes = words[SW_NSLOTS] * SLOT_W * 8
            self.side = Side(words, view[base : base + slot_bytes].cast("Q"),
                             view[base + slot_bytes : base + slot_bytes + words[SW_DSIZE]],
                             self._reserve_side)
            self.ns = ns
            self.max_deliveries = 0  # set by the broker from the registry entry
            self.dlq_name = f"{name[:60]}.dlq"
            self.max_message_bytes = words[W_MAX_MESSAGE_BYTES]
            self.put_lock = RobustLock(self._mm, W_PUT_LOCK * 8, f"the put lock of '{name}'",
                                       self.ring.repair_put_side)
            opened.append(self.put_lock)
            self.get_lock = RobustLock(self._mm, W_GET_LOCK * 8, f"the get lock of '{name}'",
                                       self._repair_get)
            opened.append(self.get_lock)
            self.bell = segment.open_sem(objs["bell"])
            # put/get in one C call each (same words, same lock protocol); crash tests
            # pause inside the Python steps, so a hooked process keeps to the pure path
            self.fast: Any = None
            if speedups.ENABLED and not _HOOKED:
                try:
                    self.fast = speedups.fast.Fast(
                        self._mm, name, self.put_lock, self.get_lock, objs["bell"],
                        self._reserve, self._reserve_side)
                except FileNotFoundError:  # deleted since the semaphores above were opened
                    raise segment.Gone(objs["bell"]) from None
        except BaseException:
            for lock in opened:
                lock.close()
            side = getattr(self, "side", None)
            if side is not None:
                for v in (side.slot_bytes, side.slots, side.data):
                    v.release()
            ring = getattr(self, "ring", None)
            if ring is not None:
                ring.data.release()
                ring.table.release()
            header = getattr(self, "words", None)
            if header is not None:
                header.release()
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
        nslots, dsize = Side.sizes(max_messages, max_bytes, max_message_bytes)
        table_at = _pages(HEADER_BYTES + max_bytes + nslots * SLOT_W * 8 + dsize)
        size = table_at + _pages(table_bytes(max_bytes))
        shm = segment.create_shm(objs["ring"], size, HEADER_BYTES)
        mm = segment.map_shm(shm)
        try:
            words = memoryview(mm)[:HEADER_BYTES].cast("Q")
            Ring.format(words, max_bytes, max_messages, max_message_bytes, table_at)
            Side.format(words, nslots, dsize)
            words[W_CREATED_AT] = _time_ns() // 1000
            words[W_SLOT_GEN] = slot << 32 | gen
            RobustLock.format(mm, W_PUT_LOCK * 8)
            RobustLock.format(mm, W_GET_LOCK * 8)
            words[W_VERSION] = LAYOUT_VERSION
            words[W_MAGIC] = QUEUE_MAGIC  # last: a segment with magic is complete
            words.release()
        finally:
            mm.close()
        segment.create_sem(objs["bell"], 0).close()

    @staticmethod
    def unlink(ns: str, slot: int, gen: int) -> None:
        objs = names.queue_objects(ns, slot, gen)
        segment.unlink_shm(objs["ring"])
        segment.unlink_sem(objs["bell"])

    def mark_deleted(self) -> None:
        """Close the queue for every process: later puts and gets raise QueueDeleted.

        Called inside a registry change, which must finish once begun: it waits
        for the queue's locks whatever the calling thread's wait policy.
        """
        with patient(), self.put_lock, self.get_lock:
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
        return (bool(self._local_waiters) or self.put_lock.locked() or self.get_lock.locked()
                or (self.fast is not None and self.fast.busy))

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
        if self.fast is not None:
            self.fast.release()
        self.ring.data.release()  # type: ignore[union-attr]
        self.ring.table.release()
        self.side.slot_bytes.release()
        self.side.slots.release()
        self.side.data.release()  # type: ignore[union-attr]
        self.words.release()
        with contextlib.suppress(BufferError):  # a view is still out; unmapped with it
            self._mm.close()

    def _reserve(self, upto: int) -> None:
        """Back ring bytes [reserved, upto) rounded up to a chunk, and the block table's
        pages for them, before ``reserved`` says so (put lock held)."""
        self._back(W_RESERVED, HEADER_BYTES, self.words[W_RING_SIZE], upto, table=True)

    def _reserve_side(self, which: int, upto: int) -> None:
        """Back side-table bytes [reserved, upto) of the slots (0) or data ring (1)."""
        words = self.words
        slot_bytes = words[SW_NSLOTS] * SLOT_W * 8
        word, start, size = ((SW_SRES, self._side_base, slot_bytes) if which == 0 else
                             (SW_DRES, self._side_base + slot_bytes, words[SW_DSIZE]))
        self._back(word, start, size, upto)

    def _back(self, word: int, start: int, size: int, upto: int, table: bool = False) -> None:
        """Back bytes [reserved, upto) of the region at ``start`` whose reserved length is
        ``words[word]``, in whole chunks up to ``size`` (with ``table``, the block table's
        entries for them too); then record the new length."""
        words = self.words
        have = words[word]
        want = min(size, -(-upto // RESERVE_CHUNK) * RESERVE_CHUNK)
        try:
            shm = segment.open_shm(self._objects["ring"])
        except segment.Gone:
            raise QueueDeleted(self.name) from None
        try:
            segment.reserve(shm.fd, start + have, want - have)
            if table:
                have_table = table_bytes(have) & ~(PAGE - 1)
                segment.reserve(shm.fd, words[W_TABLE] + have_table,
                                table_bytes(want) - have_table)
        finally:
            shm.close_fd()
        words[word] = want

    def _repair_get(self) -> None:
        """The get lock was found dirty: the ring's totals, then the side table."""
        self.ring.repair_get_side()
        self.side.repair(self.words[W_HEAD] >> 32, self._source_state)

    def _source_state(self, origin: int, idx: int) -> int | None:
        """Word 0 of side slot ``idx`` of queue ``origin`` (slot << 32 | gen), or None."""
        if origin == (self.slot << 32 | self.gen):
            return self.side.slots[idx * SLOT_W]
        name = names.queue_objects(self.ns, origin >> 32, origin & 0xFFFFFFFF)["ring"]
        try:
            mm = segment.map_shm(segment.open_shm(name))
        except segment.Gone:
            return None
        try:
            words = memoryview(mm).cast("Q")
            try:
                at = (HEADER_BYTES + words[W_RING_SIZE]) // 8 + idx * SLOT_W
                return int(words[at])
            finally:
                words.release()
        finally:
            mm.close()

    def _check_caps(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Leased, delayed and returned messages count against the caps too."""
        ring, side, words = self.ring, self.side, self.words
        count = ring.count() + side.count()
        need = sum(record_bytes(len(d)) for _, d in records)
        if (count + len(records) > ring.max_messages
                or ring.used_bytes() + words[SW_BYTES] + need > ring.size):
            words[W_FULL_TOTAL] += 1
            raise QueueFull(self.name, ring.max_messages, count, ring.size, need)

    # -- put -------------------------------------------------------------------

    def put(self, records: Sequence[tuple[int, bytes]], t0: int) -> tuple[int, int]:
        """Append ``records`` (kind, payload) atomically, all or none.

        ``t0`` is ``perf_counter_ns()`` when the caller started (for the
        latency histogram). Returns (queue size after, enqueued_at µs).
        """
        fast = self.fast
        if fast is not None:  # None back: the side table holds bytes, caps need Python
            done: tuple[int, int] | None = fast.put(records, t0)
            if done is not None:
                return done
        words, ring = self.words, self.ring
        lock = self.put_lock
        lock.acquire()
        try:
            if words[W_FLAGS] & FLAG_CLOSED:
                raise QueueDeleted(self.name)
            if _HOOKED:
                hooks.reach("put.locked")
            if words[SW_BYTES]:
                self._check_caps(records)
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
        self, max_n: int, t0: int, was_waiting: bool, keep_waiting: bool, tag: object = None,
        lease_us: int = 0,
    ) -> list[Record]:
        """Pop up to ``max_n`` under the get lock and (un)register as a waiter.

        Returned messages come first, then the ring. With ``lease_us`` each
        record carries (lease id, delivery count, lease expiry µs) after the tag.
        """
        fast = self.fast
        if fast is not None:  # None back: the side table has due/ready work
            got: list[Record] | None = (
                fast.lease(max_n, t0, was_waiting, keep_waiting, tag, None, lease_us,
                           _time_ns(), None) if lease_us else
                fast.take(max_n, t0, was_waiting, keep_waiting, tag))
            if got is not None:
                if fast.trim_due:
                    self.trim()
                return got
        words, ring = self.words, self.ring
        lock = self.get_lock
        lock.acquire()
        try:
            if words[W_FLAGS] & FLAG_CLOSED:
                raise QueueDeleted(self.name)  # a waiter unregisters in get()'s finally
            if _HOOKED:
                hooks.reach("get.locked")
            if words[SW_DUE] or words[SW_READY] or lease_us:
                records = self._take_side(max_n, tag, lease_us)
            else:
                records = []
            if len(records) < max_n:
                try:
                    got, new_head, nbytes = ring.read(max_n - len(records), tag)
                except RingCorrupt as ex:
                    raise BrokenError(f"queue '{self.name}': {ex}") from ex
                if got:
                    if lease_us:
                        got = self._lease_from_ring(got, new_head, nbytes, lease_us)
                    else:
                        if _HOOKED:
                            hooks.reach("get.read")
                        ring.commit_head(new_head, len(got), nbytes)
                        if _HOOKED:
                            hooks.reach("get.committed")
                    records += got
            if records:
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
        if records and records[-1][2] + TRIM_AGE_US < _time_ns() // 1000 and not ring.count():
            self.trim()  # drained of old records: not a stream
        return records

    def trim(self) -> bool:
        """Give an empty ring's memory back to /dev/shm, all but ``TRIM_KEEP`` bytes.

        Under both locks, so no record is being written or read: (1) move the
        empty ring's tail, then its head, back to offset 0, where the next
        records land in the kept bytes; (2) lower ``reserved`` to ``TRIM_KEEP``,
        so a put that grows past it re-reserves with fallocate before writing
        (a full /dev/shm stays a clean StorageExhausted, never SIGBUS); (3) only
        then punch the ring pages above and the block table's pages for them
        (``MADV_REMOVE`` on tmpfs is a hole punch; the side table is not touched). A death between
        (1)'s two stores leaves an empty ring with offsets apart, which the next
        put-side holder puts back together (``Ring.repair_put_side``); after (2)
        the pages are merely still there. Returns True if memory was given back.

        Housekeeping never waits and never raises LockBusy: it runs after a get
        has committed its records, which must reach the caller; a lock held
        elsewhere means the queue is not idle, so the memory stays for now.
        """
        words = self.words
        if words[W_RESERVED] <= TRIM_KEEP or self.ring.count():
            return False
        try:
            return self._trim_now()
        except LockBusy:
            return False

    def _trim_now(self) -> bool:
        words = self.words
        with never_wait(), self.put_lock, self.get_lock:
            reserved = words[W_RESERVED]
            if words[W_FLAGS] & FLAG_CLOSED or reserved <= TRIM_KEEP or self.ring.count():
                return False
            seq = words[W_TAIL] >> 32
            words[W_TAIL] = seq << 32
            if _HOOKED:
                hooks.reach("trim.moved")
            words[W_HEAD] = seq << 32
            words[W_RESERVED] = TRIM_KEEP
            if _HOOKED:
                hooks.reach("trim.lowered")
            table_keep = _pages(table_bytes(TRIM_KEEP))
            with contextlib.suppress(OSError):  # not tmpfs: the memory stays, no harm
                self._mm.madvise(mmap.MADV_REMOVE, HEADER_BYTES + TRIM_KEEP, reserved - TRIM_KEEP)
                table_held = _pages(table_bytes(reserved))
                if table_held > table_keep:  # the block table's pages for the punched ring
                    self._mm.madvise(mmap.MADV_REMOVE, words[W_TABLE] + table_keep,
                                     table_held - table_keep)
        return True

    def lease_id(self, idx: int, token: int) -> str:
        return f"{self.gen:x}.{idx:x}.{token:x}"

    def _take_side(self, max_n: int, tag: object, lease_us: int) -> list[Record]:
        """Reclaim what is due, then take READY slots (get lock held)."""
        side = self.side
        now = _time_ns() // 1000
        side.reclaim_due(now, self.max_deliveries)
        out: list[Record] = []
        for idx in side.ready(max_n):
            kind, data, enq = side.payload(idx)
            _, deliveries, _ = side.state(idx)
            deliveries += 1
            if lease_us:
                token = side.next_token()
                side.set_word(idx, S_DEADLINE, now + lease_us)
                side.set_state(idx, LEASED, token=token, deliveries=deliveries)
                out.append((kind, data, enq, tag, self.lease_id(idx, token),  # type: ignore[arg-type]
                            deliveries, now + lease_us))
            else:
                side.set_state(idx, FREE)
                out.append((kind, data, enq, tag, None, deliveries, None))  # type: ignore[arg-type]
        return out

    def _lease_from_ring(self, got: list[Record], new_head: int, nbytes: int,
                         lease_us: int) -> list[Record]:
        """Copy records into PENDING slots, commit the head, then make them LEASED."""
        side, ring = self.side, self.ring
        deadline = _time_ns() // 1000 + lease_us
        try:
            slots = side.store_leases(got, self.words[W_HEAD] >> 32, deadline)
        except SideFull:
            raise QueueFull(self.name, ring.max_messages, ring.count() + side.count(),
                            ring.size, 0) from None
        if _HOOKED:
            hooks.reach("lease.written")
        ring.commit_head(new_head, len(got), nbytes)  # the commit point
        if _HOOKED:
            hooks.reach("lease.committed")
        side.confirm_leases(slots, deadline)
        gen = f"{self.gen:x}."
        return [(kind, data, enq, tag, f"{gen}{idx:x}.{token:x}", 1, deadline)  # type: ignore[misc]
                for (kind, data, enq, tag), (idx, token) in zip(got, slots, strict=True)]

    # -- reliable delivery: everything under the get lock ---------------------------

    def _parse(self, lease_id: str) -> tuple[int, int] | None:
        try:
            gen, idx, token = (int(p, 16) for p in lease_id.split("."))
        except (ValueError, AttributeError):
            return None
        return (idx, token) if gen == self.gen and idx >= 0 else None

    def _locked(self) -> RobustLock:
        lock = self.get_lock
        lock.acquire()
        if self.words[W_FLAGS] & FLAG_CLOSED:
            lock.release()
            raise QueueDeleted(self.name)
        return lock

    def ack(self, lease_ids: Sequence[str]) -> list[str]:
        """Remove leased messages for good; return the ids that were not held."""
        fast = self.fast
        if fast is not None:  # None back: a deadline passed (reclaim first) or an odd id
            not_held: list[str] | None = fast.ack(lease_ids, _time_ns())
            if not_held is not None:
                return not_held
        side = self.side
        lock = self._locked()
        try:
            if _HOOKED:
                hooks.reach("ack.locked")
            now = _time_ns() // 1000
            side.reclaim_due(now, self.max_deliveries)
            pairs = [self._parse(i) or (-1, 0) for i in lease_ids]
            not_held = [i for i, ok in zip(lease_ids, side.ack_many(pairs, now), strict=True)
                        if not ok]
        finally:
            lock.release()
        return not_held

    def nack(self, lease_id: str, delay_us: int = 0) -> int | None:
        """End a lease without an ack; return the new state (READY, DELAYED, DEAD) or None."""
        side = self.side
        lock = self._locked()
        try:
            now = _time_ns() // 1000
            side.reclaim_due(now, self.max_deliveries)
            parsed = self._parse(lease_id)
            if parsed is None or not side.held(*parsed, now):
                return None
            idx = parsed[0]
            if _HOOKED:
                hooks.reach("nack.locked")
            if delay_us > 0:
                _, deliveries, _ = side.state(idx)
                if self.max_deliveries and deliveries >= self.max_deliveries:
                    side.set_state(idx, DEAD)
                    state = DEAD
                else:
                    side.set_word(idx, S_DEADLINE, now + delay_us)
                    side.set_state(idx, DELAYED)
                    self.words[SW_REDELIVERED] += 1
                    state = DELAYED
            else:
                state = side.give_back(idx, self.max_deliveries)
        finally:
            lock.release()
        if state == READY:
            self._wake(1)
        return state

    def nack_many(self, lease_ids: Sequence[str]) -> None:
        """Give back every lease held (a closed connection): at once, not at expiry."""
        for lease_id in lease_ids:
            self.nack(lease_id)

    def extend(self, lease_id: str, seconds: float) -> int | None:
        """Move a held lease's deadline to now + ``seconds``; return it (µs) or None."""
        side = self.side
        lock = self._locked()
        try:
            now = _time_ns() // 1000
            side.reclaim_due(now, self.max_deliveries)
            parsed = self._parse(lease_id)
            if parsed is None or not side.held(*parsed, now):
                return None
            deadline = now + max(1, int(seconds * 1e6))
            side.set_word(parsed[0], S_DEADLINE, deadline)  # one store: the commit point
            side.set_state(parsed[0], LEASED)  # keeps next_due no later than it
            return deadline
        finally:
            lock.release()

    def requeue(self, records: Sequence[tuple[int, bytes, int, int]]) -> int:
        """Put taken (kind, data, enqueued_at, deliveries) back ahead of the ring, in order.

        Each message is committed by its own slot store, so a process killed
        half-way has put back a prefix (the rest it had taken anyway).
        """
        side = self.side
        lock = self._locked()
        try:
            for i, (kind, data, enq, deliveries) in enumerate(records):
                try:
                    side.store(kind, data, enq, READY, key=enq, seq=i, deliveries=deliveries)
                except SideFull:
                    raise QueueFull(self.name, self.ring.max_messages,
                                    self.ring.count() + side.count(), self.ring.size, 0) from None
                if _HOOKED:
                    hooks.reach("requeue.stored")
            self.words[SW_REQUEUED] += len(records)
        finally:
            lock.release()
        self._wake(len(records))
        return len(records)

    def put_delayed(self, records: Sequence[tuple[int, bytes]], deliver_at: int) -> tuple[int, int]:
        """Store records invisible until ``deliver_at`` (µs), all or none.

        A batch is written STAGED, committed by one store of the batch number,
        then made DELAYED (see ``side``). Returns (visible size, enqueued_at).
        """
        side, words = self.side, self.words
        lock = self._locked()
        try:
            self._check_caps(records)
            now = _time_ns() // 1000
            batch = words[SW_BATCH] + 1
            stored: list[int] = []
            try:
                for kind, data in records:
                    stored.append(side.store(kind, data, now, STAGED, deadline=deliver_at,
                                             key=deliver_at, aux=batch)[0])
            except SideFull:
                for idx in stored:
                    side.set_state(idx, FREE)
                raise QueueFull(self.name, self.ring.max_messages,
                                self.ring.count() + side.count(), self.ring.size, 0) from None
            if _HOOKED:
                hooks.reach("delay.written")
            words[SW_BATCH] = batch  # the commit point
            for idx in stored:
                side.set_state(idx, DELAYED)
            size = self.ring.count() + words[SW_READY]
        finally:
            lock.release()
        self._wake(1)  # parked consumers bound their wait by the new due time
        return size, now

    def move_out(self, dst: SharedQueue, state: int, origin: int | None, reset: bool) -> int:
        """Move this queue's DEAD (or REDRIVE) slots into ``dst`` as READY; return how many.

        Both get locks are held, lower slot first; see ``side`` for why a
        kill at any step leaves each message in exactly one of the two.
        ``origin`` keeps only slots that came from that queue (redrive).
        """
        first, second = sorted((self, dst), key=lambda q: (q.slot, q.gen))
        src, to = self.side, dst.side
        moved = 0
        with first.get_lock, second.get_lock:
            if self.deleted or dst.deleted:
                raise QueueDeleted(dst.name if dst.deleted else self.name)
            me = self.slot << 32 | self.gen
            for idx in src.in_state(state):
                if origin is not None and src.word(idx, S_ORIGIN) != origin:
                    continue
                kind, data, enq = src.payload(idx)
                token, deliveries, _ = src.state(idx)
                try:
                    b, _ = to.store(kind, data, enq, IN, key=src.word(idx, S_KEY) or enq,
                                    seq=src.word(idx, S_SEQ), deliveries=0 if reset else deliveries,
                                    aux=idx << 32 | token, origin=me)
                except SideFull:
                    break
                if _HOOKED:
                    hooks.reach("move.written")
                src.set_state(idx, FREE)  # the commit point
                if _HOOKED:
                    hooks.reach("move.committed")
                to.set_state(b, READY)
                moved += 1
            if state == DEAD:
                self.words[SW_DEAD_TOTAL] += moved
        dst._wake(moved)
        return moved

    def mark_redrive(self, live: set[int]) -> dict[int, int]:
        """Mark READY messages that came from a ``live`` queue REDRIVE; count by origin."""
        side = self.side
        by_origin: dict[int, int] = {}
        lock = self._locked()
        try:
            for idx in side.ready(side.nslots):
                origin = side.word(idx, S_ORIGIN)
                if origin in live:
                    side.set_state(idx, REDRIVE)
                    by_origin[origin] = by_origin.get(origin, 0) + 1
            for idx in side.in_state(REDRIVE):  # left by a redrive that died
                origin = side.word(idx, S_ORIGIN)
                if origin in live:
                    by_origin.setdefault(origin, 0)
                else:
                    side.set_state(idx, READY)
        finally:
            lock.release()
        return by_origin

    def mark_leases_redrive(self, lease_ids: Sequence[str], origin: int) -> None:
        """Leases this process holds become REDRIVE towards ``origin`` (one store each):
        a DLQ's own messages, taken for a redrive by name."""
        side = self.side
        lock = self._locked()
        try:
            now = _time_ns() // 1000
            for lease_id in lease_ids:
                parsed = self._parse(lease_id)
                if parsed is not None and side.held(*parsed, now):
                    side.set_word(parsed[0], S_ORIGIN, origin)
                    side.set_state(parsed[0], REDRIVE)
        finally:
            lock.release()

    def held_messages(self) -> list[tuple[int, int, bytes, int, int, int, int]]:
        """(state, kind, data, enqueued_at, deliveries, deadline, key) of every side slot."""
        side = self.side
        out = []
        with self.get_lock:
            for st in (LEASED, DELAYED, READY, DEAD, REDRIVE):
                for idx in side.in_state(st):
                    kind, data, enq = side.payload(idx)
                    out.append((st, kind, data, enq, side.state(idx)[1],
                                side.word(idx, S_DEADLINE), side.word(idx, S_KEY)))
        return out

    def _wake(self, n: int) -> None:
        waiters = self.words[W_WAITERS]
        if waiters and n:
            self._ring_bell(min(n, waiters))

    def get(self, max_n: int, timeout: float, tag: object = None,
            lease_us: int = 0) -> list[Record]:
        """Take up to ``max_n`` records, waiting up to ``timeout`` seconds for the first.

        With ``lease_us`` they are leased, not removed (see ``_take``).
        """
        if self.interrupted:
            timeout = 0.0
        records = self._take(max_n, _perf_ns(), False, False, tag, lease_us)
        if records or timeout <= 0:
            return records
        deadline = _monotonic() + timeout
        # A busy producer is usually microseconds away: look again before parking,
        # which costs both sides a system call and this side a context switch.
        if self._spin(min(SPIN_SECONDS, timeout)):
            records = self._take(max_n, _perf_ns(), False, False, tag, lease_us)
            if records:
                return records
        records = self._take(max_n, _perf_ns(), False, True, tag, lease_us)
        if records:
            return records
        waiting = True
        with self._waiters_lock:
            self._local_waiters += 1
        try:
            while True:
                self._park(deadline)
                stay = not self.interrupted and _monotonic() < deadline
                records = self._take(max_n, _perf_ns(), True, stay, tag, lease_us)
                waiting = stay and not records
                if not waiting:
                    if not records:
                        self.trim()  # waited and nothing came: idle
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
        """Sleep until the doorbell rings, a message is ready, the deadline passes or
        a lease or delayed message falls due (so expiry needs no daemon)."""
        try:
            words = self.words
            if self.ring.count() or words[SW_READY]:
                return
            remaining = deadline - _monotonic()
            due = words[SW_DUE]
            if due:
                remaining = min(remaining, (due - _time_ns() // 1000) / 1e6 + 0.001)
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
            if self.ring.count() or self.words[SW_READY]:
                return True
            due = self.words[SW_DUE]
            if due:
                timeout = max(0.0, min(timeout, (due - _time_ns() // 1000) / 1e6 + 0.001))
            try:
                self.bell.acquire(timeout)
            except (_BusyError, _SignalError):
                return False
            return True
        finally:
            with self._waiters_lock:
                self._local_waiters -= 1
            self._register(-1)

    def something_due(self) -> bool:
        """A returned message is ready, or a lease or delayed message has fallen due."""
        words = self.words
        due = words[SW_DUE]
        return bool(words[SW_READY]) or (due != 0 and due <= _time_ns() // 1000)

    def pass_bell(self) -> None:
        """Hand a ring we took but cannot use to another waiter."""
        if self.words[W_WAITERS] and (self.ring.count() or self.words[SW_READY]):
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
        """Up to ``max_n`` ready records in serving order, left in place."""
        side = self.side
        with self.get_lock:
            if self.deleted:
                raise QueueDeleted(self.name)
            side.reclaim_due(_time_ns() // 1000, self.max_deliveries)
            out: list[Record] = [(*side.payload(i), tag) for i in side.ready(max_n)]
            return out + self.ring.read(max_n - len(out), tag)[0]

    def note_timeout(self) -> None:
        """Count a get that waited and found nothing (asyncio waiters count here)."""
        with self.get_lock:
            self.words[W_TIMEOUTS] += 1
        self.trim()

    def clear(self) -> int:
        """Drop ready, returned and delayed messages (leases stay with their holders)."""
        side = self.side
        with self.get_lock:
            if self.deleted:
                raise QueueDeleted(self.name)
            dropped = [i for st in (READY, DELAYED, DEAD) for i in side.in_state(st)]
            for idx in dropped:
                side.set_state(idx, FREE)
            n = self.ring.clear() + len(dropped)
        self.trim()
        return n

    def oldest_enqueued_at(self) -> int:
        """enqueued_at (µs) of the oldest ready message, 0 if none; lock-free, racy."""
        ring, side = self.ring, self.side
        oldest = 0
        if self.words[SW_READY]:
            with self.get_lock:
                ready = side.ready(1)
                if ready:
                    oldest = side.word(ready[0], S_ENQ)
        if ring.count():
            off = self.words[W_HEAD] & 0xFFFFFFFF
            try:  # the record may be consumed and overwritten meanwhile: a sane time or none
                ts = decode(ring.data, off, ring.size, ring.table)[3]
            except (RingCorrupt, struct.error):
                ts = 0
            if 0 < ts <= _time_ns() // 1000 and (not oldest or ts < oldest):
                oldest = ts
        return oldest

    # -- stats: racy reads of single words, never the lock -----------------------

    def ready(self) -> int:
        """Messages ready now, read without a lock; QueueDeleted once closed here."""
        try:
            return self.ring.count() + self.words[SW_READY]  # + messages given back
        except ValueError:  # closed here meanwhile (deleted): its views are released
            raise QueueDeleted(self.name) from None

    def stats(self) -> dict[str, object]:
        try:
            return self._stats()
        except ValueError:  # closed here meanwhile (deleted)
            raise QueueDeleted(self.name) from None

    def _stats(self) -> dict[str, object]:
        w = self.words
        removed, cleared = w[W_DEQ_TOTAL], w[W_CLEARED]
        now = _time_ns() // 1000
        oldest = self.oldest_enqueued_at()
        return {
            "size": self.ring.count() + w[SW_READY],
            "inflight": w[SW_LEASED],
            "delayed": w[SW_DELAYED],
            "acked_total": w[SW_ACKED],
            "redelivered_total": w[SW_REDELIVERED],
            "dead_lettered_total": w[SW_DEAD_TOTAL],
            "requeued_total": w[SW_REQUEUED],
            "oldest_age_seconds": max(0.0, (now - oldest) / 1e6) if oldest else 0.0,
            "capacity": w[W_MAX_MESSAGES],
            "bytes": self.ring.used_bytes() + w[SW_BYTES],
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
