"""The namespace's table of queues: one segment of slots under one robust lock.

A slot's first word, ``gen << 32 | state``, is its commit point. Creating a
queue goes FREE -> CREATING (gen + 1, name and caps written) -> objects
created -> ACTIVE; deleting goes ACTIVE -> DELETING -> queue closed in every
process, objects unlinked -> FREE. A process that dies anywhere in between
leaves a CREATING or DELETING slot, which the next holder of the registry
lock (``_repair``) rolls back or finishes. Lookups read without the lock and
see only ACTIVE slots, validated by reading the state word again after the
name (a seqlock).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import NamedTuple

from zoldyq import api
from zoldyq.api import MAX_MESSAGE_BYTES_LIMIT
from zoldyq.errors import (
    AccessDenied,
    BrokenError,
    ConfigError,
    LayoutMismatch,
    NamespaceNotFound,
    QueueExists,
    QueueNotFound,
    StorageExhausted,
    TooManyQueues,
)
from zoldyq.shm import hooks, names, segment
from zoldyq.shm.layout import (
    ACTIVE,
    CREATING,
    DELETING,
    FLAG_DESTROYED,
    FREE,
    HEADER_BYTES,
    LAYOUT_VERSION,
    MAX_MESSAGES_LIMIT,
    MAX_RING_SIZE,
    NAME_BYTES,
    R_CREATED_AT,
    R_DEF_MAX_BYTES,
    R_DEF_MAX_MESSAGE_BYTES,
    R_DEF_MAX_MESSAGES,
    R_FLAGS,
    R_LOCK,
    R_MAGIC,
    R_MAX_QUEUES,
    R_VERSION,
    REGISTRY_MAGIC,
    S_CREATED_AT,
    S_DLQ_LEN,
    S_DLQ_NAME,
    S_MAX_BYTES,
    S_MAX_DELIVERIES,
    S_MAX_MESSAGE_BYTES,
    S_MAX_MESSAGES,
    S_NAME,
    S_NAME_LEN,
    S_STATE_GEN,
    SLOT_WORDS,
    pack_state,
    registry_bytes,
    unpack_state,
)
from zoldyq.shm.lock import RobustLock
from zoldyq.shm.queue import SharedQueue
from zoldyq.shm.ring import min_ring_size

MAX_QUEUES_LIMIT = 65536


class Caps(api.Caps):
    """A queue's limits, as the ring can hold them."""

    def checked(self) -> Caps:
        """Validate and round; raises ConfigError with the offending value."""
        mm, mb, mmb = self
        if not 1 <= mm <= MAX_MESSAGES_LIMIT:
            raise ConfigError(f"max_messages must be 1..{MAX_MESSAGES_LIMIT}, got {mm}")
        if not 1 <= mmb <= MAX_MESSAGE_BYTES_LIMIT:
            raise ConfigError(
                f"max_message_bytes must be 1..{MAX_MESSAGE_BYTES_LIMIT}, got {mmb}"
            )
        mb = (mb + 7) & ~7
        if not min_ring_size(mmb) <= mb <= MAX_RING_SIZE:
            raise ConfigError(
                f"max_bytes must be {min_ring_size(mmb)}..{MAX_RING_SIZE} "
                f"(at least two records of max_message_bytes), got {mb}"
            )
        return Caps(mm, mb, mmb)


class Entry(NamedTuple):
    name: str
    slot: int
    gen: int
    caps: Caps
    created_at: int
    max_deliveries: int = 0  # 0: a message is given back however often it fails
    dead_letter_queue: str = ""  # "" with max_deliveries: "<name>.dlq"

    @property
    def dlq(self) -> str:
        """The dead-letter queue's name."""
        return self.dead_letter_queue or f"{self.name[:60]}.dlq"


class Registry:
    """Attach to namespace ``ns``'s registry; raises NamespaceNotFound."""

    def __init__(self, ns: str) -> None:
        self.ns = names.check_namespace(ns)
        base = names.registry(ns)
        try:
            shm = segment.open_shm(base)
        except segment.Gone:
            raise NamespaceNotFound(ns) from None
        except AccessDenied:
            raise  # ours to open, but not private: it names the object
        except PermissionError:
            raise AccessDenied(ns) from None
        if shm.size < HEADER_BYTES:
            shm.close_fd()
            raise BrokenError(f"namespace '{ns}' has a truncated registry")
        self.inode = os.fstat(shm.fd).st_ino  # tells this namespace from a re-created one
        self._mm = segment.map_shm(shm)
        self.words = words = memoryview(self._mm).cast("Q")
        deadline = time.monotonic() + 2.0
        while words[R_MAGIC] == 0 and time.monotonic() < deadline:
            time.sleep(0.001)  # its creator is still writing the header
        if words[R_MAGIC] != REGISTRY_MAGIC:
            self._drop()
            raise BrokenError(f"namespace '{ns}' has no valid registry")
        if words[R_VERSION] != LAYOUT_VERSION:
            found = words[R_VERSION]
            self._drop()
            raise LayoutMismatch(ns, found, LAYOUT_VERSION)
        self.max_queues = words[R_MAX_QUEUES]
        self.created_at = words[R_CREATED_AT]
        self.lock = RobustLock(self._mm, R_LOCK * 8, "the registry lock", self._repair)

    def _drop(self) -> None:
        self.words.release()
        with contextlib.suppress(BufferError):  # a thread stuck inside the lock keeps it
            self._mm.close()

    def close(self) -> None:
        self.lock.close()
        self._drop()

    @property
    def destroyed(self) -> bool:
        return bool(self.words[R_FLAGS] & FLAG_DESTROYED)

    @property
    def gone(self) -> bool:
        """True once this namespace was destroyed, even if one of the same name was
        created since."""
        if self.destroyed:
            return True
        try:
            return os.stat(segment.SHM_DIR + names.registry(self.ns)).st_ino != self.inode
        except FileNotFoundError:
            return True

    @property
    def defaults(self) -> Caps:
        """The caps of queues created from now on (read each time: a server that
        reattaches after a crash sets its own, ``set_defaults``)."""
        w = self.words
        return Caps(w[R_DEF_MAX_MESSAGES], w[R_DEF_MAX_BYTES], w[R_DEF_MAX_MESSAGE_BYTES])

    def set_defaults(self, caps: Caps) -> None:
        """New default caps for queues created later; existing queues keep theirs."""
        caps = caps.checked()
        with self.lock:
            w = self.words
            w[R_DEF_MAX_MESSAGES], w[R_DEF_MAX_BYTES], w[R_DEF_MAX_MESSAGE_BYTES] = caps

    # -- creation ----------------------------------------------------------------

    @staticmethod
    def create(ns: str, max_queues: int, defaults: Caps) -> bool:
        """Create namespace ``ns``; False if it already exists (then attach).

        A namespace left half-destroyed (its destroyer was killed) or
        half-created (its creator died before the header was written) is
        finished off first and created anew: neither can ever serve again.
        """
        for _ in range(3):
            if Registry._create(ns, max_queues, defaults):
                return True
            try:
                Registry(ns).close_if_alive()
            except NamespaceNotFound:
                continue  # destroyed meanwhile: create it
            except (AccessDenied, LayoutMismatch):
                raise
            except BrokenError:
                pass  # no valid header after the wait: its creator died
            else:
                return False
            Registry.destroy(ns)
        raise BrokenError(f"namespace '{ns}' keeps being destroyed while it is created")

    def close_if_alive(self) -> None:
        """Close; raises BrokenError if the namespace was (half) destroyed."""
        destroyed = self.destroyed
        self.close()
        if destroyed:
            raise BrokenError(f"namespace '{self.ns}' was destroyed")

    @staticmethod
    def _create(ns: str, max_queues: int, defaults: Caps) -> bool:
        names.check_namespace(ns)
        if not 1 <= max_queues <= MAX_QUEUES_LIMIT:
            raise ConfigError(f"max_queues must be 1..{MAX_QUEUES_LIMIT}, got {max_queues}")
        defaults = defaults.checked()
        base = names.registry(ns)
        size = registry_bytes(max_queues)
        free = segment.shm_free_bytes()
        if size > free:
            raise StorageExhausted(size, free)
        # The segment, exclusive: whoever creates it initialises it (its lock too).
        try:
            shm = segment.create_shm(base, size, size)
        except FileExistsError:
            return False
        mm = segment.map_shm(shm)
        RobustLock.format(mm, R_LOCK * 8)
        words = memoryview(mm).cast("Q")
        words[R_MAX_QUEUES] = max_queues
        words[R_DEF_MAX_MESSAGES], words[R_DEF_MAX_BYTES], words[R_DEF_MAX_MESSAGE_BYTES] = (
            defaults
        )
        words[R_CREATED_AT] = time.time_ns() // 1000
        words[R_VERSION] = LAYOUT_VERSION
        words[R_MAGIC] = REGISTRY_MAGIC  # last: attachers wait for it
        words.release()
        mm.close()
        return True

    @staticmethod
    def destroy(ns: str) -> None:
        """Close every queue, then unlink every object of ``ns`` (idempotent)."""
        names.check_namespace(ns)
        try:
            reg = Registry(ns)
        except (NamespaceNotFound, BrokenError):
            reg = None
        if reg is not None:
            with reg.lock, reg.lock.dirty_on_error():
                reg.words[R_FLAGS] |= FLAG_DESTROYED
                reg._empty()
            reg.close()
        for entry in segment.leftovers(names.registry(ns)):
            segment.unlink_leftover(entry)

    # -- slots -------------------------------------------------------------------

    def _base(self, slot: int) -> int:
        return HEADER_BYTES // 8 + slot * SLOT_WORDS

    def _state(self, slot: int) -> tuple[int, int]:
        return unpack_state(self.words[self._base(slot) + S_STATE_GEN])

    def _set_state(self, slot: int, gen: int, state: int) -> None:
        self.words[self._base(slot) + S_STATE_GEN] = pack_state(gen, state)

    def _name(self, slot: int) -> bytes:
        b = self._base(slot)
        length = min(self.words[b + S_NAME_LEN], NAME_BYTES)
        start = (b + S_NAME) * 8
        return self._mm[start : start + length]

    def _entry(self, slot: int, gen: int) -> Entry:
        b = self._base(slot)
        w = self.words
        caps = Caps(w[b + S_MAX_MESSAGES], w[b + S_MAX_BYTES], w[b + S_MAX_MESSAGE_BYTES])
        start = (b + S_DLQ_NAME) * 8
        dlq = self._mm[start : start + min(w[b + S_DLQ_LEN], NAME_BYTES)].decode("ascii")
        return Entry(self._name(slot).decode("ascii"), slot, gen, caps, w[b + S_CREATED_AT],
                     w[b + S_MAX_DELIVERIES], dlq)

    def _active(self) -> Iterator[Entry]:
        """Every ACTIVE slot, read without the lock and validated seqlock-style."""
        words = self.words
        for slot in range(self.max_queues):
            b = self._base(slot)
            first = words[b + S_STATE_GEN]
            if first & 0xFFFFFFFF != ACTIVE:
                continue
            entry = self._entry(slot, first >> 32)
            if words[b + S_STATE_GEN] == first:
                yield entry

    def lookup(self, name: str) -> Entry | None:
        key = name.encode("ascii")
        for entry in self._active():
            if entry.name.encode("ascii") == key:
                return entry
        return None

    def entries(self) -> list[Entry]:
        return sorted(self._active(), key=lambda e: e.name)

    def count(self) -> int:
        return sum(1 for _ in self._active())

    # -- changes (under the lock) --------------------------------------------------

    def create_queue(self, name: str, caps: Caps | None, exist_ok: bool,
                     dead: tuple[int, str] | None = None) -> tuple[Entry, bool]:
        """Create queue ``name``; returns (entry, created).

        ``dead`` is (max_deliveries, dead_letter_queue). An existing queue is
        returned when ``exist_ok`` and its settings match (or none were
        asked for); otherwise QueueExists, saying whether its limits differ.
        """
        asked = caps
        caps = (caps or self.defaults).checked()
        max_deliveries, dlq = dead or (0, "")
        with self.lock:
            if self.destroyed:
                raise NamespaceNotFound(self.ns)
            found = self.lookup(name)
            if found is not None:
                same = (asked is None or caps == found.caps) and (dead is None or (
                    max_deliveries, dlq) == (found.max_deliveries, found.dead_letter_queue))
                if exist_ok and same:
                    return found, False
                raise QueueExists(name, other_limits=not same)
            slot = next(
                (s for s in range(self.max_queues) if self._state(s)[1] == FREE), None
            )
            if slot is None:
                raise TooManyQueues(self.max_queues)
            needed = HEADER_BYTES + caps.max_bytes
            free = segment.shm_free_bytes()
            if needed > free:
                raise StorageExhausted(needed, free)
            gen = (self._state(slot)[0] + 1) & 0xFFFFFFFF
            b = self._base(slot)
            w = self.words
            encoded = name.encode("ascii")
            start = (b + S_NAME) * 8
            self._mm[start : start + len(encoded)] = encoded
            w[b + S_NAME_LEN] = len(encoded)
            w[b + S_MAX_MESSAGES], w[b + S_MAX_BYTES], w[b + S_MAX_MESSAGE_BYTES] = caps
            w[b + S_CREATED_AT] = time.time_ns() // 1000
            w[b + S_MAX_DELIVERIES] = max_deliveries
            start = (b + S_DLQ_NAME) * 8
            self._mm[start : start + len(dlq)] = dlq.encode("ascii")
            w[b + S_DLQ_LEN] = len(dlq)
            self._set_state(slot, gen, CREATING)
            if hooks.ENABLED:
                hooks.reach("registry.creating")
            try:
                SharedQueue.create(self.ns, slot, gen, *caps)
            except BaseException:
                with self.lock.dirty_on_error():  # the rollback failed too: _repair does it
                    SharedQueue.unlink(self.ns, slot, gen)
                    self._set_state(slot, gen, FREE)
                raise
            self._set_state(slot, gen, ACTIVE)
            return self._entry(slot, gen), True

    def delete_queue(self, name: str) -> Entry:
        with self.lock:
            found = self.lookup(name)
            if found is None:
                raise QueueNotFound(name)
            with self.lock.dirty_on_error():  # half deleted: the next holder finishes it
                self._set_state(found.slot, found.gen, DELETING)
                if hooks.ENABLED:
                    hooks.reach("registry.deleting")
                self._close_and_unlink(found.slot, found.gen)
                self._set_state(found.slot, found.gen, FREE)
            return found

    def _close_and_unlink(self, slot: int, gen: int) -> None:
        """Close the queue in every process (flag under its locks), then unlink it."""
        try:
            q = SharedQueue(self.ns, slot, gen, f"#{slot}")
        except (segment.Gone, BrokenError):
            q = None
        if q is not None:
            q.mark_deleted()
            q.close()
        SharedQueue.unlink(self.ns, slot, gen)

    def _empty(self) -> None:
        """Close and unlink every queue (a destroy; the lock is held)."""
        for slot in range(self.max_queues):
            gen, state = self._state(slot)
            if state != FREE:
                self._close_and_unlink(slot, gen)
                self._set_state(slot, gen, FREE)
                if hooks.ENABLED:
                    hooks.reach("registry.destroying")

    def _repair(self) -> None:
        """A holder died or failed inside: roll back half-created queues, finish
        half-deleted ones, and finish emptying a namespace being destroyed."""
        if self.destroyed:
            self._empty()
            return
        for slot in range(self.max_queues):
            gen, state = self._state(slot)
            if state == CREATING:
                SharedQueue.unlink(self.ns, slot, gen)
                self._set_state(slot, gen, FREE)
            elif state == DELETING:
                self._close_and_unlink(slot, gen)
                self._set_state(slot, gen, FREE)
