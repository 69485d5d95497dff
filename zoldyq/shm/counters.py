"""Process-level figures shared by every process of a namespace.

HTTP workers count requests and the WebSocket sidecar counts connections,
but a Prometheus scrape lands on one worker: to answer with the same
figures whichever process is asked, they live in one small shared segment
per namespace, ``/zoldyq.<ns>.ops`` (unlinked with the namespace by
``zoldyq.destroy``, which removes every ``/zoldyq.<ns>.*`` object).

Layout: a 64-byte header (magic, version, slots in use), then ``SLOTS``
slots of 64 bytes: a 56-byte ASCII key padded with NULs, then a signed
64-bit value. Writers hold an exclusive ``flock`` on the segment (the
kernel drops it if they die) for the few instructions of an update; each
value is one aligned 8-byte store, so readers take no lock and never see a
torn value. A new key is written before ``in use`` grows past it (the
commit point), so a reader never sees a slot without its key.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
import weakref
from collections.abc import Iterator

from zoldyq.shm import names, segment, speedups

_atomic_add = speedups.fast.atomic_add if speedups.ENABLED else None

MAGIC = int.from_bytes(b"ZOLDYQ.O", "little")
VERSION = 1
HEADER = 64
SLOT = 64
KEY_BYTES = 56
SLOTS = 1024
SIZE = HEADER + SLOTS * SLOT
_H_MAGIC, _H_VERSION, _H_USED = 0, 1, 2
_flock, _LOCK_EX, _LOCK_UN = fcntl.flock, fcntl.LOCK_EX, fcntl.LOCK_UN
_live: weakref.WeakSet[Counters] = weakref.WeakSet()


def segment_name(namespace: str) -> str:
    return names.registry(names.check_namespace(namespace)) + ".ops"


class Counters:
    """Named shared counters and gauges of one namespace.

    Args:
        namespace: the namespace they belong to.
        create: make the segment if it is missing (writers); readers pass
            False and see no counters until a writer made them.

    Raises:
        FileNotFoundError: ``create`` is False and there is no segment yet.
        StorageExhausted: /dev/shm has no room for it.
    """

    def __init__(self, namespace: str, create: bool = True) -> None:
        name = segment_name(namespace)
        try:
            shm = segment.open_shm(name)
        except segment.Gone:
            if not create:
                raise FileNotFoundError(name) from None
            # Not exclusive: racing creators share one object, zero-filled by the
            # kernel. Every page is backed now: a write to an unbacked page of a
            # full tmpfs is SIGBUS.
            shm = segment.create_shm(name, SIZE, SIZE, exclusive=False)
        if shm.size < SIZE:
            shm.close_fd()
            raise FileNotFoundError(f"{name} is truncated")
        self._name, self._fd = name, shm.fd
        self._mm = mmap.mmap(self._fd, SIZE)
        self._words = memoryview(self._mm).cast("q")
        self._lock = threading.Lock()
        self._index: dict[str, int] = {}
        if create and self._words[_H_MAGIC] != MAGIC:
            with self._locked():
                if self._words[_H_MAGIC] != MAGIC:
                    self._words[_H_VERSION] = VERSION
                    self._words[_H_MAGIC] = MAGIC
        _live.add(self)

    def _after_fork(self) -> None:
        """In a forked child (a gunicorn worker inheriting the master's app): a descriptor
        of its own. An inherited one shares the parent's open file, and so its ``flock``:
        the processes did not exclude each other, and two adding new keys at once wrote
        them into the same slot."""
        with contextlib.suppress(OSError, segment.Gone):
            shm = segment.open_shm(self._name)
            os.dup2(shm.fd, self._fd, inheritable=False)
            shm.close_fd()

    def close(self) -> None:
        _live.discard(self)
        with contextlib.suppress(BufferError):
            self._words.release()
            self._mm.close()
        with contextlib.suppress(OSError):
            os.close(self._fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _word(self, key: str) -> int | None:
        """The value word of ``key``, adding the key if new (lock held); None when full."""
        idx = self._index.get(key)
        if idx is not None:
            return idx
        raw = key.encode("ascii", "replace")[:KEY_BYTES]
        words, mm = self._words, self._mm
        used = words[_H_USED]
        for slot in range(used):
            off = HEADER + slot * SLOT
            if mm[off : off + KEY_BYTES].rstrip(b"\0") == raw:
                idx = self._index[key] = (off + KEY_BYTES) // 8
                return idx
        if used >= SLOTS:
            return None  # full: the figure is dropped rather than the request failing
        off = HEADER + used * SLOT
        mm[off : off + KEY_BYTES] = raw.ljust(KEY_BYTES, b"\0")
        words[(off + KEY_BYTES) // 8] = 0
        words[_H_USED] = used + 1  # commit point
        idx = self._index[key] = (off + KEY_BYTES) // 8
        return idx

    def add(self, key: str, n: int = 1) -> None:
        """Add ``n`` (may be negative) to ``key``, creating it at 0.

        Called once per HTTP request. With the compiled module a known key takes
        one atomic add and no lock (~0.1 µs instead of 2-4 µs for the lock pair);
        only a new key takes the lock. A process on the pure path adds under the
        lock, which does not exclude an atomic add of another process: an
        increment can be lost only when processes on both paths add to the same
        key at the same instant (these are request metrics, not messages). A
        compiled process adds atomically even under the lock, for the same reason.
        """
        idx = self._index.get(key)
        if idx is not None and _atomic_add is not None:
            _atomic_add(self._mm, idx, n)
            return
        fd = self._fd
        with self._lock:
            _flock(fd, _LOCK_EX)
            try:
                idx = self._index.get(key) or self._word(key)
                if idx is not None and _atomic_add is not None:
                    _atomic_add(self._mm, idx, n)
                elif idx is not None:
                    self._words[idx] += n
            finally:
                _flock(fd, _LOCK_UN)

    def set(self, key: str, value: int) -> None:
        with self._locked():
            idx = self._word(key)
            if idx is not None:
                self._words[idx] = value

    def items(self) -> dict[str, int]:
        """Every key and its value, read without the lock."""
        words, mm = self._words, self._mm
        out = {}
        for slot in range(min(words[_H_USED], SLOTS)):
            off = HEADER + slot * SLOT
            key = mm[off : off + KEY_BYTES].rstrip(b"\0").decode("ascii", "replace")
            out[key] = words[(off + KEY_BYTES) // 8]
        return out


def _after_fork_in_child() -> None:
    for counters in list(_live):
        counters._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
