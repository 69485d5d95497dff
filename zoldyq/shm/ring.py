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
5. Every compact or medium record between head and tail is dated against the
   base its block (``layout.BLOCK``) had when it was written, and that base has
   not changed since: the put side stores a block's base (one store, before the
   records and the tail) only when no committed record between head and tail
   can end in that block (``date``; the argument is in ``layout``).

Totals (``enq_total``, ``deq_total``) are written after the commit and can be
one step behind if the writer dies there; ``repair_*`` recomputes them from
the sequence numbers, which are exact.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Sequence

from zoldyq.shm.layout import (
    BLOCK_SHIFT,
    COMPACT_LEN,
    COMPACT_RANGE,
    COMPACT_TIME_SHIFT,
    KIND_BYTES,
    KIND_JSON,
    KIND_SHIFT,
    LEN_MASK,
    LEN_SHIFT,
    MEDIUM_RANGE,
    SEQ_MASK,
    TAG_LONG,
    TAG_MASK,
    TAG_MEDIUM,
    TAG_WRAP,
    TIME_HI_SHIFT,
    W_BYTES_IN,
    W_BYTES_OUT,
    W_CLEARED,
    W_DEQ_TOTAL,
    W_ENQ_TOTAL,
    W_HEAD,
    W_MAX_MESSAGE_BYTES,
    W_MAX_MESSAGES,
    W_RESERVED,
    W_RING_SIZE,
    W_TABLE,
    W_TAIL,
)

HDR = 4  # a compact record's header (one u32, see ``layout``); a wrap marker is one alone
COMPACT, MEDIUM, LONG = 4, 8, 12  # the forms, named by their header's bytes
_COMPACT_LEN_MASK = COMPACT_LEN - 1
_PAD = tuple(bytes(n) for n in range(4))
_one = struct.Struct("<I")
_two = struct.Struct("<II")
_full = struct.Struct("<Iq")
_u32 = _one.unpack_from
_pair = _two.unpack_from
_stamp_at = struct.Struct("<q").unpack_from
_WRAP = _one.pack(TAG_WRAP)


def record_bytes(payload_len: int, form: int = 0) -> int:
    """Ring bytes one record takes: header + payload, padded to 4; by default in the
    form a fresh record usually takes (compact when short enough, else medium)."""
    if not form:
        form = COMPACT if payload_len < COMPACT_LEN else MEDIUM
    return (form + payload_len + 3) & ~3


# -- the record header, the one place it is encoded and decoded (see ``layout``) ----------


def date(table: memoryview, t: int, length: int, start: int, busy: bool, prev: int,
         head: int, mine: tuple[int, int] = (-1, -1)) -> tuple[int, int, int]:
    """The form of a record of ``length`` bytes put at ``t`` µs, to start at ``start``:
    (form, delta, block whose base to store first or -1).

    ``busy``: a committed record or one of this batch lies between head and tail;
    ``prev``: where the newest of those ends (the tail as the batch goes); ``head``: the
    head offset; ``mine``: the first and last blocks this batch stores (their base is
    ``t``). A block's base may be stored only when no such record can end in it
    (``layout``): the newest one ends in an earlier block (or before a wrap) and the
    head does not lie ahead of the record inside it. Otherwise the base stays and the
    record is dated against it, in the smallest form that holds the delta.
    """
    if t < 0:
        return LONG, 0, -1
    for form, reach in ((COMPACT, COMPACT_RANGE), (MEDIUM, MEDIUM_RANGE)):
        if form == COMPACT and length >= COMPACT_LEN:
            continue
        x = (start + form + length - 1) >> BLOCK_SHIFT
        if not busy or not ((start == prev and prev > x << BLOCK_SHIFT)
                            or start <= head < (x + 1) << BLOCK_SHIFT):
            return form, 0, x
        delta = t - (t if x in mine else table[x])
        if 0 <= delta < reach:
            return form, delta, -1
    return LONG, 0, -1


def header(form: int, length: int, kind: int, delta: int, enqueued_at: int) -> bytes:
    """A record's header in ``form`` (``date``'s): 4, 8 or 12 bytes."""
    word = length << LEN_SHIFT
    if form == COMPACT:
        return _one.pack(kind | word | delta << COMPACT_TIME_SHIFT)
    if form == MEDIUM:
        return _two.pack(kind | TAG_MEDIUM | word | delta >> 32 << TIME_HI_SHIFT,
                         delta & SEQ_MASK)
    return _full.pack(TAG_LONG | word | kind << KIND_SHIFT, enqueued_at)


def decode(data: memoryview | bytearray, off: int, size: int, table: memoryview
           ) -> tuple[int, int, int, int]:
    """The record at ``off`` (past a wrap marker): (kind, payload start, payload end,
    enqueued_at). Raises RingCorrupt rather than return one that does not parse."""
    word = _u32(data, off)[0]
    tag = word & TAG_MASK
    if tag == TAG_WRAP:
        off = 0
        word = _u32(data, 0)[0]
        tag = word & TAG_MASK
    kind = tag & ~TAG_MEDIUM
    if tag == TAG_LONG:
        start, kind = off + LONG, word >> KIND_SHIFT
        end = start + (word >> LEN_SHIFT & LEN_MASK)
    elif tag & TAG_MEDIUM:
        start = off + MEDIUM
        end = start + (word >> LEN_SHIFT & LEN_MASK)
    else:
        start = off + COMPACT
        end = start + (word >> LEN_SHIFT & _COMPACT_LEN_MASK)
    if (kind != KIND_JSON and kind != KIND_BYTES) or end > size:
        raise RingCorrupt(f"bad record at offset {off}: tag {tag}, header {word:#x}")
    if tag == TAG_LONG:
        ts = _stamp_at(data, off + 4)[0]
    elif tag & TAG_MEDIUM:
        ts = table[(end - 1) >> BLOCK_SHIFT] + (word >> TIME_HI_SHIFT << 32
                                               | _u32(data, off + 4)[0])
    else:
        ts = table[(end - 1) >> BLOCK_SHIFT] + (word >> COMPACT_TIME_SHIFT)
    return kind, start, end, ts


def min_ring_size(max_message_bytes: int) -> int:
    """The smallest ring (a multiple of 8) that always has room for one maximal record."""
    return (2 * record_bytes(max_message_bytes, LONG) + 7) & ~7


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
        table: the block table (``layout.table_bytes``) cast to ``"Q"``.
        reserve: called with a ring offset before the first write past
            ``words[W_RESERVED]``; it must back the memory up to there (or
            raise, in which case nothing is written).
        source, base: where ``data`` lives, for copying payloads out: an
            mmap, whose slices are bytes (default: copies of ``data`` at 0).
    """

    __slots__ = ("_base", "_reserve", "_source", "data", "max_messages", "size", "table",
                 "words")

    def __init__(
        self,
        words: memoryview,
        data: memoryview | bytearray,
        table: memoryview,
        reserve: Callable[[int], None] | None = None,
        source: mmap.mmap | None = None,
        base: int = 0,
    ) -> None:
        self.words = words
        self.data = data
        self.table = table
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
        words: memoryview, size: int, max_messages: int, max_message_bytes: int, table_at: int
    ) -> None:
        """Write the control words of an empty ring (the rest must be zero); its block
        table lies ``table_at`` bytes into the segment."""
        words[W_TABLE] = table_at
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
        words, size, table = self.words, self.size, self.table
        tail, head = words[W_TAIL], words[W_HEAD]
        seq, off = tail >> 32, tail & SEQ_MASK
        head_off = head & SEQ_MASK
        count = (seq - (head >> 32)) & SEQ_MASK
        if count + n > self.max_messages:
            raise RingFull(count)
        free = size - (((off - head_off) % size or size) if count else 0)
        # plan every record (form, delta, where it starts), then write them all
        plan: list[tuple[int, int, int]] = []
        stores: list[int] = []
        pos, need, high, busy, first, last, wrapped = off, 0, 0, bool(count), -1, -1, False
        for _kind, payload in records:
            length = len(payload)
            start = pos if record_bytes(length, LONG) <= size - pos else 0
            form, delta, store = date(table, enqueued_at, length, start, busy, pos, head_off,
                                      (first, last))
            if store >= 0:
                stores.append(store)
                last = store
                if first < 0:
                    first = store
            end = start + record_bytes(length, form)
            if start == pos:
                need += end - pos
            else:  # a wrap marker at pos, padding to the end, the record at 0
                need += size - pos + end
                high = max(high, pos + HDR)
                wrapped = True
            high = max(high, end)
            plan.append((form, delta, start))
            pos, busy = end % size, True
        if need > free:
            raise RingFull(count, need)
        if high > words[W_RESERVED] and self._reserve is not None:
            self._reserve(high)
        for store in stores:  # bases first: each is enqueued_at, the batch's one time
            table[store] = enqueued_at
        recs = [header(form, len(p), k, delta, enqueued_at) + p + _PAD[-len(p) & 3]
                for (k, p), (form, delta, _) in zip(records, plan, strict=True)]
        data = self.data
        if not wrapped:
            blob = b"".join(recs)
            data[off : off + len(blob)] = blob
        else:
            at = off
            for rec, (_, _, start) in zip(recs, plan, strict=True):
                if start != at:
                    data[at : at + HDR] = _WRAP
                data[start : start + len(rec)] = rec
                at = (start + len(rec)) % size
        return (((seq + n) & SEQ_MASK) << 32) | pos

    def write_one(self, kind: int, payload: bytes, enqueued_at: int) -> int:
        """``write`` for one record: the hot path, without lists."""
        words, size = self.words, self.size
        tail, head = words[W_TAIL], words[W_HEAD]
        seq, off = tail >> 32, tail & SEQ_MASK
        count = (seq - (head >> 32)) & SEQ_MASK
        if count >= self.max_messages:
            raise RingFull(count)
        length = len(payload)
        head_off = head & SEQ_MASK
        start = off if ((LONG + 3 + length) & ~3) <= size - off else 0
        form, delta, store = date(self.table, enqueued_at, length, start, bool(count), off,
                                  head_off)
        end = start + ((form + 3 + length) & ~3)
        need = end - off if start == off else size - off + end
        if count and need > size - ((off - head_off) % size or size):
            raise RingFull(count, need)
        high = end if start == off else max(end, off + HDR)
        if high > words[W_RESERVED] and self._reserve is not None:
            self._reserve(high)
        if store >= 0:
            self.table[store] = enqueued_at
        data = self.data
        if start != off:
            data[off : off + HDR] = _WRAP
        if form == COMPACT:  # header()'s common case, without the call
            _one.pack_into(data, start, kind | length << LEN_SHIFT | delta << COMPACT_TIME_SHIFT)
        else:
            data[start : start + form] = header(form, length, kind, delta, enqueued_at)
        at = start + form
        data[at : at + length] = payload
        if end > at + length:
            data[at + length : end] = _PAD[end - at - length]
        return (((seq + 1) & SEQ_MASK) << 32) | (0 if end == size else end)

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
        size, data, table, source, base = self.size, self.data, self.table, self._source, self._base
        if available > self.max_messages or off >= size or off & 3:
            raise RingCorrupt(f"bad head {head:#x}: offset {off}, {available} records")
        n = min(available, max_n)
        out: list[Record] = []
        append = out.append
        nbytes = 0
        for _ in range(n):
            word = _u32(data, off)[0]
            kind = word & TAG_MASK
            start = off + COMPACT
            off = start + (word >> LEN_SHIFT & _COMPACT_LEN_MASK)
            if 0 < kind < TAG_WRAP and off <= size:  # decode()'s common case, without the call
                ts = table[(off - 1) >> BLOCK_SHIFT] + (word >> COMPACT_TIME_SHIFT)
            else:
                kind, start, off, ts = decode(data, start - COMPACT, size, table)
            append((kind, source[base + start : base + off], ts, tag))
            nbytes += off - start
            off = (off + 3) & ~3
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
