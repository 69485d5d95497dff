"""A FIFO of variable-size records over any writable buffer: the pure core.

It knows nothing of processes, locks or shared memory: tests run it on a
``bytearray``, the engine on an mmap. The caller serialises producers among
themselves (the put side) and consumers among themselves (the get side); a
producer and a consumer may run at the same time.

Invariants (``layout`` names the words):

1. ``tail = enq_seq32 << 32 | tail_off`` and ``head = deq_seq32 << 32 | head_off``.
   Each is written by one side only, with one aligned 8-byte store: that store
   is the side's commit point, so every change is all or nothing even if the
   writer dies at any instruction.
2. ``count = (enq_seq - deq_seq) mod 2**32 <= max_messages``, and
   ``used = 0`` when ``count == 0``, else ``(tail_off - head_off) mod size``
   (``size`` when the two meet): the bytes between head and tail, including
   wrap padding.
3. Every byte from head to tail belongs to a complete record or to wrap
   padding. A producer writes records beyond the tail, where no consumer
   looks, and then publishes them by storing ``tail``; x86's total store order
   makes the records visible before the new tail.
4. A record never straddles the end of the ring and is at most half the
   ring, so an empty ring always has room for one.
5. Every record between head and tail with a short header is dated against
   the current ``epoch`` word: the put side moves the epoch (one store, before
   the records and the tail) only when it finds the ring empty (``layout``).

Totals (``enq_total``, ``deq_total``) are written after the commit and can be
one step behind if the writer dies there; ``repair_*`` recomputes them from
the sequence numbers, which are exact.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Sequence

from zoldyq.shm.layout import (
    EPOCH_SLACK_US,
    KIND_BYTES,
    KIND_JSON,
    LEN_BITS,
    LEN_MASK,
    SEQ_MASK,
    TAG_LONG,
    TAG_WRAP,
    TIME_HI_SHIFT,
    TIME_RANGE,
    W_BYTES_IN,
    W_BYTES_OUT,
    W_CLEARED,
    W_DEQ_TOTAL,
    W_ENQ_TOTAL,
    W_EPOCH,
    W_HEAD,
    W_MAX_MESSAGE_BYTES,
    W_MAX_MESSAGES,
    W_RESERVED,
    W_RING_SIZE,
    W_TAIL,
)

HDR = 8  # a record's header (two u32s, see ``layout``); a wrap marker is one alone
LONG_HDR = 16  # the header, then enqueued_at in full
_PAD = tuple(bytes(n) for n in range(8))
_short = struct.Struct("<II").pack
_short_into = struct.Struct("<II").pack_into
_long = struct.Struct("<IIq").pack
_pair = struct.Struct("<II").unpack_from
_stamp_at = struct.Struct("<q").unpack_from
_WRAP = _short(TAG_WRAP << LEN_BITS, 0)


def record_bytes(payload_len: int, long: bool = False) -> int:
    """Ring bytes one record takes: header + payload, padded to 8 (a short header
    unless ``long``; a long one only when the epoch is out of reach, see ``layout``)."""
    return ((LONG_HDR if long else HDR) + payload_len + 7) & ~7


# -- the record header, the one place it is encoded and decoded (see ``layout``) ----------


def stamp(words: memoryview, enqueued_at: int, empty: bool) -> int:
    """``enqueued_at``'s µs past the epoch for a short header, or -1 for a long record
    (put side). Over an empty ring an out-of-range time first moves the epoch: one
    store, which no queued record depends on."""
    delta = enqueued_at - words[W_EPOCH]
    if 0 <= delta < TIME_RANGE:
        return delta
    if not empty or enqueued_at < 0:
        return -1
    epoch = max(0, enqueued_at - EPOCH_SLACK_US)
    words[W_EPOCH] = epoch
    return enqueued_at - epoch


def header(length: int, kind: int, delta: int, enqueued_at: int) -> bytes:
    """A record's header for ``stamp``'s ``delta``: 8 bytes, or 16 for a long record."""
    if delta < 0:
        return _long(length | (kind | TAG_LONG) << LEN_BITS, 0, enqueued_at)
    return _short(length | kind << LEN_BITS | delta >> 32 << TIME_HI_SHIFT, delta & SEQ_MASK)


def decode(data: memoryview | bytearray, off: int, size: int, epoch: int
           ) -> tuple[int, int, int, int]:
    """The record at ``off`` (past a wrap marker): (kind, payload start, payload end,
    enqueued_at). Raises RingCorrupt rather than return one that does not parse."""
    word, low = _pair(data, off)
    tag = word >> LEN_BITS & 7
    if tag == TAG_WRAP:
        off = 0
        word, low = _pair(data, 0)
        tag = word >> LEN_BITS & 7
    start = off + HDR
    if tag & TAG_LONG:
        ts = _stamp_at(data, start)[0]
        start += 8
        tag ^= TAG_LONG
    else:
        ts = epoch + (word >> TIME_HI_SHIFT << 32 | low)
    end = start + (word & LEN_MASK)
    if (tag != KIND_JSON and tag != KIND_BYTES) or end > size:
        raise RingCorrupt(f"bad record at offset {off}: kind {tag}, length {word & LEN_MASK}")
    return tag, start, end, ts


def min_ring_size(max_message_bytes: int) -> int:
    """The smallest ring that always has room for one maximal record."""
    return 2 * record_bytes(max_message_bytes)


def _span(pos: int, rec: int, size: int) -> tuple[int, int]:
    """Bytes a record of ``rec`` bytes uses at ``pos`` (with wrap padding) and its top offset."""
    room = size - pos
    if rec <= room:
        return rec, pos + rec
    return room + rec, max(rec, pos + HDR)


class RingFull(Exception):
    """Not enough messages or bytes left; nothing was written."""

    def __init__(self, count: int, needed_bytes: int = 0) -> None:
        super().__init__(count, needed_bytes)
        self.count = count
        self.needed_bytes = needed_bytes


class RingCorrupt(Exception):
    """A record between head and tail does not parse: never handed out."""


Record = tuple[int, bytes, int, object]


class _Copies:
    """Slices of a buffer as bytes, like an mmap's (for rings over a bytearray)."""

    __slots__ = ("buf",)

    def __init__(self, buf: memoryview | bytearray) -> None:
        self.buf = buf

    def __getitem__(self, span: slice) -> bytes:
        return bytes(self.buf[span])  # kind, payload, enqueued_at µs, the caller's tag


class Ring:
    """Records in ``data`` with control words in ``words`` (see ``layout``).

    Args:
        words: the header as a ``memoryview`` cast to ``"Q"``.
        data: the ring bytes, ``words[W_RING_SIZE]`` long.
        reserve: called with a ring offset before the first write past
            ``words[W_RESERVED]``; it must back the memory up to there (or
            raise, in which case nothing is written).
        source, base: where ``data`` lives, for copying payloads out: an
            mmap, whose slices are bytes (default: copies of ``data`` at 0).
    """

    __slots__ = ("_base", "_reserve", "_source", "data", "max_messages", "size", "words")

    def __init__(
        self,
        words: memoryview,
        data: memoryview | bytearray,
        reserve: Callable[[int], None] | None = None,
        source: mmap.mmap | None = None,
        base: int = 0,
    ) -> None:
        self.words = words
        self.data = data
        self.size = words[W_RING_SIZE]
        self.max_messages = words[W_MAX_MESSAGES]
        self._reserve = reserve
        # Payloads are copied out by slicing ``source`` at ``base + offset``: an mmap
        # slices straight to bytes, twice as fast as bytes(memoryview[...]). A slice of
        # a memoryview would alias the ring and one of a bytearray is no bytes.
        self._source: mmap.mmap | _Copies = _Copies(data) if source is None else source
        self._base = base

    @staticmethod
    def format(
        words: memoryview, size: int, max_messages: int, max_message_bytes: int
    ) -> None:
        """Write the control words of an empty ring (the rest must be zero)."""
        words[W_RING_SIZE] = size
        words[W_MAX_MESSAGES] = max_messages
        words[W_MAX_MESSAGE_BYTES] = max_message_bytes

    # -- reading without a lock: every value comes from one word -------------

    def count(self) -> int:
        return ((self.words[W_TAIL] >> 32) - (self.words[W_HEAD] >> 32)) & SEQ_MASK

    def used_bytes(self) -> int:
        tail, head = self.words[W_TAIL], self.words[W_HEAD]
        if not ((tail >> 32) - (head >> 32)) & SEQ_MASK:
            return 0
        return ((tail & SEQ_MASK) - (head & SEQ_MASK)) % self.size or self.size

    # -- put side --------------------------------------------------------------

    def write(self, records: Sequence[tuple[int, bytes]], enqueued_at: int) -> int:
        """Write ``records`` (kind, payload) past the tail; return the new tail word.

        Nothing is visible until ``commit_tail``. Raises RingFull when the
        batch does not fit whole (and then writes nothing).
        """
        n = len(records)
        if n == 1:
            return self.write_one(*records[0], enqueued_at)
        words, size = self.words, self.size
        tail, head = words[W_TAIL], words[W_HEAD]
        seq, off = tail >> 32, tail & SEQ_MASK
        count = (seq - (head >> 32)) & SEQ_MASK
        if count + n > self.max_messages:
            raise RingFull(count)
        free = size - (((off - (head & SEQ_MASK)) % size or size) if count else 0)
        delta = stamp(words, enqueued_at, not count)
        common = 0 <= delta <= SEQ_MASK  # header()'s common case below, without its call
        # one contiguous blob when it fits before the end, else record by record
        blob = b"".join([(_short(len(p) | k << LEN_BITS, delta) if common
                          else header(len(p), k, delta, enqueued_at)) + p + _PAD[-len(p) & 7]
                         for k, p in records])
        need = high = len(blob)
        if need <= size - off:
            high += off
        else:
            blob, need, high, pos = b"", 0, 0, off
            for _kind, payload in records:
                used, top = _span(pos, record_bytes(len(payload), delta < 0), size)
                need += used
                high = max(high, top)
                pos = (pos + used) % size
        if need > free:
            raise RingFull(count, need)
        if high > words[W_RESERVED] and self._reserve is not None:
            self._reserve(high)
        if blob:
            self.data[off : off + need] = blob
            pos = (off + need) % size
        else:
            pos = off
            for kind, payload in records:
                pos = self._emit(pos, header(len(payload), kind, delta, enqueued_at), payload)
        return (((seq + n) & SEQ_MASK) << 32) | pos

    def write_one(self, kind: int, payload: bytes, enqueued_at: int) -> int:
        """``write`` for one record: the hot path, without lists or planning."""
        words, size = self.words, self.size
        tail, head = words[W_TAIL], words[W_HEAD]
        seq, off = tail >> 32, tail & SEQ_MASK
        count = (seq - (head >> 32)) & SEQ_MASK
        if count >= self.max_messages:
            raise RingFull(count)
        length = len(payload)
        delta = enqueued_at - words[W_EPOCH]  # stamp()'s common case, without the call
        if not 0 <= delta < TIME_RANGE:
            delta = stamp(words, enqueued_at, not count)
        rec = ((HDR if delta >= 0 else LONG_HDR) + length + 7) & ~7
        end = off + rec
        need, high = (rec, end) if end <= size else _span(off, rec, size)
        if count and need > size - ((off - (head & SEQ_MASK)) % size or size):
            raise RingFull(count, need)
        if high > words[W_RESERVED] and self._reserve is not None:
            self._reserve(high)
        if end > size or not 0 <= delta <= SEQ_MASK:
            end = self._emit(off, header(length, kind, delta, enqueued_at), payload)
        else:  # header()'s common case, without the call
            _short_into(self.data, off, length | kind << LEN_BITS, delta)
            self.data[off + HDR : off + HDR + length] = payload
            if end == size:
                end = 0
        return (((seq + 1) & SEQ_MASK) << 32) | end

    def _emit(self, pos: int, hdr: bytes, payload: bytes) -> int:
        """Write one record at ``pos``, wrapping first if it does not fit; return its end."""
        size, data = self.size, self.data
        start = len(hdr)
        rec = (start + len(payload) + 7) & ~7
        if rec > size - pos:
            data[pos : pos + HDR] = _WRAP  # an aligned tail short of the end has 8 bytes
            pos = 0
        start += pos
        data[pos:start] = hdr
        data[start : start + len(payload)] = payload
        pos += rec
        return 0 if pos == size else pos

    def commit_tail(self, new_tail: int, n: int, payload_bytes: int) -> None:
        """Publish what ``write`` wrote: the single store, then the totals."""
        words = self.words
        words[W_TAIL] = new_tail
        words[W_ENQ_TOTAL] += n
        words[W_BYTES_IN] += payload_bytes

    def repair_put_side(self) -> None:
        """Bring enq_total level with the tail's sequence number after a crash, and
        put the offsets of an empty ring back together (a trimmer died between its
        two stores, see ``queue.SharedQueue.trim``)."""
        words = self.words
        tail, head = words[W_TAIL], words[W_HEAD]
        if tail >> 32 == head >> 32 and (tail ^ head) & SEQ_MASK:
            words[W_TAIL] = head  # empty: no consumer moves head, so this is final
        behind = ((words[W_TAIL] >> 32) - words[W_ENQ_TOTAL]) & SEQ_MASK
        words[W_ENQ_TOTAL] += behind

    # -- get side --------------------------------------------------------------

    def read(self, max_n: int, tag: object = None) -> tuple[list[Record], int, int]:
        """Read up to ``max_n`` records (kind, payload, enqueued_at, tag) from the head.

        Returns (records, new head word, payload bytes); nothing is removed
        until ``commit_head``. Raises RingCorrupt rather than return a record
        that does not parse.
        """
        head = self.words[W_HEAD]
        seq, off = head >> 32, head & SEQ_MASK
        available = ((self.words[W_TAIL] >> 32) - seq) & SEQ_MASK
        epoch = self.words[W_EPOCH]  # after the tail: what the records were dated against
        size, data, source, base = self.size, self.data, self._source, self._base
        if available > self.max_messages or off >= size or off & 7:
            raise RingCorrupt(f"bad head {head:#x}: offset {off}, {available} records")
        n = min(available, max_n)
        out: list[Record] = []
        append = out.append
        nbytes = 0
        for _ in range(n):
            word, low = _pair(data, off)
            kind = word >> LEN_BITS  # with the time's top bits, which are 0 in the common case
            start = off + HDR
            off = start + (word & LEN_MASK)
            if 0 < kind < TAG_WRAP and off <= size:  # decode()'s common case, without the call
                ts = epoch + low
            else:
                kind, start, off, ts = decode(data, start - HDR, size, epoch)
            append((kind, source[base + start : base + off], ts, tag))
            nbytes += off - start
            off = (off + 7) & ~7
            if off == size:
                off = 0
        return out, (((seq + n) & SEQ_MASK) << 32) | off, nbytes

    def commit_head(self, new_head: int, n: int, payload_bytes: int) -> None:
        words = self.words
        words[W_HEAD] = new_head
        words[W_DEQ_TOTAL] += n
        words[W_BYTES_OUT] += payload_bytes

    def clear(self) -> int:
        """Drop every committed record (get side); return how many."""
        words = self.words
        tail = words[W_TAIL]  # one snapshot: records committed after it stay
        n = ((tail >> 32) - (words[W_HEAD] >> 32)) & SEQ_MASK
        words[W_HEAD] = tail  # same packing: head := tail
        words[W_DEQ_TOTAL] += n
        words[W_CLEARED] += n
        return n

    def repair_get_side(self) -> None:
        words = self.words
        behind = ((words[W_HEAD] >> 32) - words[W_DEQ_TOTAL]) & SEQ_MASK
        words[W_DEQ_TOTAL] += behind
