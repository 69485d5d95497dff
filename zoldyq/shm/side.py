"""Leased, delayed and returned messages: the queue's side table, a pure core.

The ring (``ring``) stays a plain FIFO in the format the fast path reads.
A message that leaves it on a lease, or that a put delays, or that comes
back (nack, expiry, a client that left) lives here until it is acked, due
or taken again. Like the ring it knows nothing of processes: tests run it
on ``bytearray``s, the engine on the queue's mmap, always under the queue's
get lock (so a lease that moves a record out of the ring is one critical
section, and the lock's dirty flag covers both structures).

Structures:

- a table of ``nslots`` slots of 16 words. Word 0 of a slot,
  ``token << 32 | deliveries << 8 | state``, is its commit point: every
  change of a message's place is one aligned 8-byte store of it, written
  after the slot's other words. States: FREE, PENDING (copied out of the
  ring, the ring's head not yet past it), LEASED, DELAYED, READY (given
  back: served before the ring, by (key, seq)), DEAD (waiting to move to
  the dead-letter queue), REDRIVE (waiting to move back to its origin),
  IN (being moved in from another queue), STAGED (part of a delayed batch
  not yet committed).
- a data ring of payloads addressed by monotonic 64-bit positions. A data
  record ``(length, slot, position)`` is live iff its slot is not FREE and
  points at that position, so freeing a slot frees its bytes; the data head
  skips dead records and relocates a live one to the tail when space runs
  out (copy, publish the tail, then the slot's position store: either the
  old or the new copy is the one referenced, never neither).

Why every message is in exactly one place after a kill -9 at any step
(the get lock is then dirty and its next holder calls ``repair``):

1. Lease from the ring: slots are written PENDING with the ring sequence
   number of their record, then the ring's head is committed (the commit
   point), then each slot becomes LEASED. Repair turns a PENDING slot into
   LEASED if the head is past its record, else frees it (the record is still
   in the ring). Nobody moves the head between the death and the repair:
   the lock is held dirty until repaired.
2. Ack, nack, extend, expiry, promotion, a plain take of a READY slot: one
   store of word 0 (or of the deadline word, for extend).
3. A delayed batch: slots are written STAGED with a batch number, then the
   header's committed batch number is stored (the commit point), then each
   slot becomes DELAYED. Repair finishes or drops STAGED slots by that
   number: a batch is delayed whole or not at all.
4. A move between queues (dead letter, redrive) holds both queues' get
   locks (in slot order). The source slot is DEAD or REDRIVE, which no
   other operation touches; the copy is written IN, naming its source slot
   and token; the source slot is freed (the commit point); the copy becomes
   READY. Repair of the destination resolves an IN slot by reading the
   source slot: still DEAD/REDRIVE with that token means the move did not
   commit (drop the copy, the source retries later), anything else means it
   did (the copy becomes READY).
5. Counts, free list, next due time and live bytes are derived: repair
   recomputes them from the slots, so a death between a commit and their
   update costs nothing.
6. Rewind (an ack left nothing held): a SKIP record at the data tail, then
   the tail, then the head jump to the next lap. The marker lies past the
   tail until the tail's store; after it the head walks dead records and the
   marker: each store alone leaves a data ring ``_reclaim_one`` can walk.

The compiled path (``_speedups.c``: ``Fast.lease``, ``Fast.ack`` and its
one-id form ``Fast.ack_one``) runs steps 1, 2 (ack) and 6 with these stores
in this order, each commit one aligned 8-byte release store, inside one C
call under the get lock; it steps aside, with nothing done, whenever the pure
path has work first (READY slots, a deadline passed), so every other step
runs only here.

Expiry needs no daemon: whoever holds the lock calls ``reclaim_due`` when
``next_due`` has passed; a waiter's timed wait is bounded by it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import NamedTuple

from zoldyq.shm.layout import (
    SLOT_W,
    SW_ACKED,
    SW_BATCH,
    SW_BYTES,
    SW_DEAD,
    SW_DELAYED,
    SW_DHEAD,
    SW_DRES,
    SW_DSIZE,
    SW_DTAIL,
    SW_DUE,
    SW_FREE,
    SW_HIGH,
    SW_LEASED,
    SW_NSLOTS,
    SW_READY,
    SW_REDELIVERED,
    SW_SRES,
    SW_TOKEN,
    W_MAX_MESSAGE_BYTES,
)

FREE, PENDING, LEASED, DELAYED, READY, DEAD, REDRIVE, IN, STAGED = range(9)
HELD = (LEASED, DELAYED, READY, DEAD, REDRIVE, IN, PENDING, STAGED)
DREC = struct.Struct("<IIQ")  # payload length, slot, own position
SLOT_REST = struct.Struct("<8Q")  # slot words 1-8, written before word 0 (not commit points)
DHDR = DREC.size
SKIP = 0xFFFFFFFF
MAX_DELIVERIES = (1 << 24) - 1
# slot words
S0, S_DEADLINE, S_KEY, S_SEQ, S_POS, S_LENKIND, S_ENQ, S_AUX, S_ORIGIN = range(9)


def rec_bytes(n: int) -> int:
    return (DHDR + n + 7) & ~7


def word0(token: int, deliveries: int, state: int) -> int:
    return token << 32 | min(deliveries, MAX_DELIVERIES) << 8 | state


class SideFull(Exception):
    """No slot or no data room left; nothing was written."""


class Taken(NamedTuple):
    """A message handed out of the side table."""

    kind: int
    data: bytes
    enqueued_at: int
    slot: int
    token: int
    deliveries: int  # including this delivery
    deadline: int  # lease expiry µs (0 for a plain take)


class Side:
    """The side table over ``words`` (the queue header), ``slots`` and ``data``.

    ``reserve(start, end)`` backs bytes [start, end) of the slot table
    (``which == 0``) or of the data ring (``which == 1``) before first use.
    """

    __slots__ = ("data", "dsize", "nslots", "reserve", "slot_bytes", "slots", "words")

    def __init__(
        self,
        words: memoryview,
        slots: memoryview,
        data: memoryview | bytearray,
        reserve: Callable[[int, int], None] | None = None,
    ) -> None:
        self.words, self.slots, self.data = words, slots, data
        self.slot_bytes = slots.cast("B")
        self.nslots = words[SW_NSLOTS]
        self.dsize = words[SW_DSIZE]
        self.reserve = reserve

    @staticmethod
    def format(words: memoryview, nslots: int, dsize: int) -> None:
        """Size an empty table (``words[W_MAX_MESSAGE_BYTES]`` must be set: ``Ring.format``)."""
        words[SW_NSLOTS] = nslots
        words[SW_DSIZE] = dsize

    @staticmethod
    def sizes(max_messages: int, max_bytes: int, max_message_bytes: int) -> tuple[int, int]:
        """(slots, data ring bytes) for a queue with these caps."""
        return min(max_messages, 1 << 20), max_bytes + 2 * rec_bytes(max_message_bytes)

    # -- lock-free reads ---------------------------------------------------------

    def count(self) -> int:
        """Messages held here, in any state (they count against the caps)."""
        w = self.words
        return w[SW_READY] + w[SW_LEASED] + w[SW_DELAYED] + w[SW_DEAD]

    def state(self, idx: int) -> tuple[int, int, int]:
        """(token, deliveries, state) of slot ``idx``."""
        v = self.slots[idx * SLOT_W]
        return v >> 32, (v >> 8) & MAX_DELIVERIES, v & 0xFF

    # -- slots -------------------------------------------------------------------

    def _alloc(self) -> int:
        w, s = self.words, self.slots
        head = w[SW_FREE]
        if head:
            idx = head - 1
            w[SW_FREE] = s[idx * SLOT_W + S_AUX]
            return idx
        idx = w[SW_HIGH]
        if idx >= self.nslots:
            raise SideFull
        end = (idx + 1) * SLOT_W * 8
        if end > w[SW_SRES] and self.reserve is not None:
            self.reserve(0, end)
        w[SW_HIGH] = idx + 1
        return idx

    def _release(self, idx: int) -> None:
        """Put a FREE slot on the free list (derived state: repair rebuilds it)."""
        w = self.words
        self.slots[idx * SLOT_W + S_AUX] = w[SW_FREE]
        w[SW_FREE] = idx + 1

    def next_token(self) -> int:
        w = self.words
        t = (w[SW_TOKEN] + 1) & 0xFFFFFFFF or 1
        w[SW_TOKEN] = t
        return t

    def store(self, kind: int, payload: bytes, enqueued_at: int, state: int, *,
              deadline: int = 0, key: int = 0, seq: int = 0, deliveries: int = 0,
              aux: int = 0, origin: int = 0) -> tuple[int, int]:
        """Write a message into a new slot, committed in ``state``; return (slot, token).

        Raises SideFull (nothing written) when no slot or data room is left.
        """
        idx = self._alloc()
        try:
            pos = self._write_data(idx, payload)
        except SideFull:
            self._release(idx)
            raise
        s, b = self.slots, idx * SLOT_W
        s[b + S_DEADLINE] = deadline
        s[b + S_KEY] = key
        s[b + S_SEQ] = seq
        s[b + S_POS] = pos
        s[b + S_LENKIND] = kind << 32 | len(payload)
        s[b + S_ENQ] = enqueued_at
        s[b + S_AUX] = aux
        s[b + S_ORIGIN] = origin
        token = self.next_token()
        s[b] = word0(token, deliveries, state)  # the commit point
        self._count(state, 1, len(payload))
        if state in (LEASED, DELAYED):
            self._due(deadline)
        return idx, token

    def store_leases(self, records: list[tuple[int, bytes, int, object]], seq: int,
                     deadline: int) -> list[tuple[int, int]]:
        """``store`` for a batch taken from the ring at sequence ``seq``: PENDING slots
        (ring seq in aux, key = enqueued_at), in one pass; returns [(slot, token)].

        Raises SideFull (or what ``reserve`` raised) with nothing stored.
        """
        w, s, data, dsize = self.words, self.slots, self.data, self.dsize
        raw = self.slot_bytes
        out: list[tuple[int, int]] = []
        nbytes = 0
        pack, pack_slot = DREC.pack_into, SLOT_REST.pack_into
        limit = dsize - 2 * rec_bytes(w[W_MAX_MESSAGE_BYTES])
        token = w[SW_TOKEN]
        try:
            for i, (kind, payload, enq, _tag) in enumerate(records):
                idx = self._alloc()
                out.append((idx, 0))
                n = len(payload)
                rec = (DHDR + n + 7) & ~7
                tail = w[SW_DTAIL]
                off = tail % dsize
                if dsize - off < rec or tail + rec - w[SW_DHEAD] > limit or off + rec > w[SW_DRES]:
                    pos = self._write_data(idx, payload)  # the general path: wrap, reclaim
                else:
                    pack(data, off, n, idx, tail)
                    data[off + DHDR : off + DHDR + n] = payload
                    w[SW_DTAIL] = tail + rec
                    pos = tail
                rseq = (seq + i) & 0xFFFFFFFF
                pack_slot(raw, idx * SLOT_W * 8 + 8, deadline, enq, rseq, pos, kind << 32 | n,
                          enq, rseq, 0)
                token = (token + 1) & 0xFFFFFFFF or 1
                s[idx * SLOT_W] = token << 32 | 1 << 8 | PENDING  # the head commits them all
                out[-1] = (idx, token)
                nbytes += rec
        except BaseException:  # SideFull, or a reserve that failed: no PENDING slot stays
            w[SW_TOKEN] = token
            for idx, _ in out:
                s[idx * SLOT_W] &= ~0xFF  # FREE
                self._release(idx)
            raise
        w[SW_TOKEN] = token
        w[SW_BYTES] += nbytes
        return out

    def confirm_leases(self, slots: list[tuple[int, int]], deadline: int) -> None:
        """PENDING -> LEASED once the ring's head is committed past them."""
        s = self.slots
        for idx, _ in slots:
            b = idx * SLOT_W
            s[b] = (s[b] & ~0xFF) | LEASED
        self.words[SW_LEASED] += len(slots)
        self._due(deadline)

    def ack_many(self, pairs: list[tuple[int, int]], now: int) -> list[bool]:
        """Ack each (slot, token) held; one flag per pair."""
        w, s = self.words, self.slots
        high = w[SW_HIGH]
        out = []
        acked = freed = 0
        head = w[SW_FREE]
        for idx, token in pairs:
            if not 0 <= idx < high:
                out.append(False)
                continue
            b = idx * SLOT_W
            v = s[b]
            if v & 0xFF != LEASED or v >> 32 != token or s[b + S_DEADLINE] <= now:
                out.append(False)
                continue
            s[b] = v & ~0xFF  # FREE: the commit point
            freed += rec_bytes(s[b + S_LENKIND] & 0xFFFFFFFF)
            s[b + S_AUX] = head
            head = idx + 1
            acked += 1
            out.append(True)
        w[SW_FREE] = head
        w[SW_LEASED] -= acked
        w[SW_BYTES] -= freed
        w[SW_ACKED] += acked
        if acked and not w[SW_BYTES]:
            self._rewind()
        return out

    def _rewind(self) -> None:
        """Nothing is held: start the data ring's next record at offset 0 again, so a
        lease-and-ack stream reuses the same warm bytes instead of walking the ring.

        A SKIP record at the tail, then the tail, then the head jump to the next lap
        (each store alone leaves a data ring ``_reclaim_one`` can walk)."""
        w, dsize = self.words, self.dsize
        tail = w[SW_DTAIL]
        off = tail % dsize
        if not off or (dsize - off >= DHDR and off + DHDR > w[SW_DRES]):
            return  # at offset 0 already, or the marker's bytes are not backed
        if dsize - off >= DHDR:
            DREC.pack_into(self.data, off, SKIP, 0, tail)
        w[SW_DTAIL] = tail + dsize - off
        w[SW_DHEAD] = tail + dsize - off

    def set_state(self, idx: int, state: int, *, token: int | None = None,
                  deliveries: int | None = None) -> None:
        """Move slot ``idx`` to ``state`` with one store (and keep the counts)."""
        s, b = self.slots, idx * SLOT_W
        old_token, old_del, old = self.state(idx)
        tok = old_token if token is None else token
        dl = old_del if deliveries is None else deliveries
        s[b] = word0(tok, dl, state)  # the commit point
        n = s[b + S_LENKIND] & 0xFFFFFFFF
        self._count(old, -1, n)
        self._count(state, 1, n)
        if state == FREE:
            self._release(idx)
        elif state in (LEASED, DELAYED):
            self._due(s[b + S_DEADLINE])

    def _count(self, state: int, delta: int, n: int) -> None:
        word = _COUNT_WORD.get(state)
        w = self.words
        if word is not None:
            w[word] += delta
        if state != FREE:
            w[SW_BYTES] += delta * rec_bytes(n)

    def _due(self, deadline: int) -> None:
        w = self.words
        if not w[SW_DUE] or deadline < w[SW_DUE]:
            w[SW_DUE] = deadline

    def payload(self, idx: int) -> tuple[int, bytes, int]:
        """(kind, payload, enqueued_at) of slot ``idx``."""
        s, b = self.slots, idx * SLOT_W
        lk = s[b + S_LENKIND]
        n = lk & 0xFFFFFFFF
        off = s[b + S_POS] % self.dsize + DHDR
        return lk >> 32, bytes(self.data[off : off + n]), s[b + S_ENQ]

    def word(self, idx: int, w: int) -> int:
        return self.slots[idx * SLOT_W + w]

    def set_word(self, idx: int, w: int, value: int) -> None:
        self.slots[idx * SLOT_W + w] = value

    # -- the data ring -----------------------------------------------------------

    def _write_data(self, idx: int, payload: bytes) -> int:
        """Append a data record for slot ``idx``; return its position."""
        w, dsize = self.words, self.dsize
        rec = rec_bytes(len(payload))
        # New records leave room to relocate the largest one (with its wrap padding),
        # so a live record at the head can always move out of the way.
        limit = dsize - 2 * rec_bytes(w[W_MAX_MESSAGE_BYTES])
        tries = self.count() + 64
        while True:
            tail, head = w[SW_DTAIL], w[SW_DHEAD]
            off = tail % dsize
            pad = dsize - off if dsize - off < rec else 0
            if tail + pad + rec - head <= limit:
                break
            tries -= 1
            if tries < 0 or not self._reclaim_one():
                raise SideFull
        pos = tail + pad
        if pad and pad >= DHDR:
            DREC.pack_into(self.data, off, SKIP, 0, tail)
        start = pos % dsize
        if start + rec > w[SW_DRES] and self.reserve is not None:
            self.reserve(1, start + rec)
        DREC.pack_into(self.data, start, len(payload), idx, pos)
        self.data[start + DHDR : start + DHDR + len(payload)] = payload
        w[SW_DTAIL] = pos + rec  # published; the slot store that references it commits
        return pos

    def _reclaim_one(self) -> bool:
        """Advance the data head by one record, relocating it if live; False if stuck."""
        w, dsize = self.words, self.dsize
        head, tail = w[SW_DHEAD], w[SW_DTAIL]
        if head >= tail:
            return False
        off = head % dsize
        if dsize - off < DHDR:
            w[SW_DHEAD] = head + dsize - off
            return True
        n, idx, pos = DREC.unpack_from(self.data, off)
        if n == SKIP:
            w[SW_DHEAD] = head + dsize - off
            return True
        rec = rec_bytes(n)
        live = (pos == head and idx < self.nslots and self.slots[idx * SLOT_W] & 0xFF != FREE
                and self.slots[idx * SLOT_W + S_POS] == head)
        if live:
            new_off = tail % dsize
            pad = dsize - new_off if dsize - new_off < rec else 0
            if tail + pad + rec - head > dsize:
                return False
            new = tail + pad
            if pad and pad >= DHDR:
                DREC.pack_into(self.data, new_off, SKIP, 0, tail)
            start = new % dsize
            if start + rec > w[SW_DRES] and self.reserve is not None:
                self.reserve(1, start + rec)
            body = bytes(self.data[off + DHDR : off + DHDR + n])
            DREC.pack_into(self.data, start, n, idx, new)
            self.data[start + DHDR : start + DHDR + n] = body
            w[SW_DTAIL] = new + rec
            self.slots[idx * SLOT_W + S_POS] = new  # the relocation's commit point
        w[SW_DHEAD] = head + rec
        return True

    # -- scans -------------------------------------------------------------------

    def _column(self, w: int) -> list[int]:
        high = self.words[SW_HIGH]
        return self.slots[w : high * SLOT_W : SLOT_W].tolist()

    def ready(self, n: int) -> list[int]:
        """Up to ``n`` READY slots, in serving order: (key, seq)."""
        if not self.words[SW_READY]:
            return []
        states = self._column(0)
        idxs = [i for i, v in enumerate(states) if v & 0xFF == READY]
        keys, seqs = self._column(S_KEY), self._column(S_SEQ)
        idxs.sort(key=lambda i: (keys[i], seqs[i]))
        return idxs[:n]

    def in_state(self, state: int) -> list[int]:
        return [i for i, v in enumerate(self._column(0)) if v & 0xFF == state]

    def reclaim_due(self, now: int, max_deliveries: int) -> int:
        """Give back expired leases and promote due delayed messages; return how many.

        A lease that expired after ``max_deliveries`` deliveries becomes DEAD.
        """
        w = self.words
        due = w[SW_DUE]
        if not due or due > now:
            return 0
        states, deadlines = self._column(0), self._column(S_DEADLINE)
        moved = 0
        nxt = 0
        for i, v in enumerate(states):
            st = v & 0xFF
            if st != LEASED and st != DELAYED:
                continue
            d = deadlines[i]
            if d > now:
                if not nxt or d < nxt:
                    nxt = d
                continue
            moved += 1
            if st == LEASED:
                self.give_back(i, max_deliveries)
            else:
                self.set_state(i, READY)
        w[SW_DUE] = nxt  # exact: every LEASED/DELAYED slot was seen
        return moved

    def give_back(self, idx: int, max_deliveries: int) -> int:
        """A lease ends without an ack: READY again, or DEAD past max_deliveries."""
        deliveries = self.state(idx)[1]
        if max_deliveries and deliveries >= max_deliveries:
            self.set_state(idx, DEAD)
            return DEAD
        self.words[SW_REDELIVERED] += 1
        self.set_state(idx, READY)
        return READY

    def held(self, idx: int, token: int, now: int) -> bool:
        """Slot ``idx`` is LEASED under ``token`` and not past its deadline."""
        if not 0 <= idx < self.words[SW_HIGH]:
            return False
        tok, _, st = self.state(idx)
        return st == LEASED and tok == token and self.word(idx, S_DEADLINE) > now

    def ack(self, idx: int, token: int, now: int) -> bool:
        if not self.held(idx, token, now):
            return False
        self.set_state(idx, FREE)
        self.words[SW_ACKED] += 1
        return True

    # -- repair (the get lock was found dirty) -------------------------------------

    def repair(self, head_seq: int, source_state: Callable[[int, int], int | None]) -> None:
        """Finish or undo what a dead holder left (see the module docstring); rebuild
        the derived words. ``source_state(origin, slot)`` reads word 0 of a slot of
        another queue (None when that queue is gone)."""
        w, s = self.words, self.slots
        committed = w[SW_BATCH]
        for i, v in enumerate(self._column(0)):
            st = v & 0xFF
            b = i * SLOT_W
            if st == PENDING:
                behind = (head_seq - s[b + S_AUX] - 1) & 0xFFFFFFFF
                s[b] = (v & ~0xFF) | (LEASED if behind < 1 << 31 else FREE)
            elif st == STAGED:
                s[b] = (v & ~0xFF) | (DELAYED if s[b + S_AUX] <= committed else FREE)
            elif st == IN:
                ref = s[b + S_AUX]
                src = source_state(s[b + S_ORIGIN], ref >> 32)
                undone = (src is not None and src >> 32 == ref & 0xFFFFFFFF
                          and src & 0xFF in (DEAD, REDRIVE))
                s[b] = (v & ~0xFF) | (FREE if undone else READY)
        self.recount()

    def recount(self) -> None:
        w, s = self.words, self.slots
        counts = dict.fromkeys(_COUNT_WORD.values(), 0)
        nbytes = due = 0
        free = 0
        states = self._column(0)
        deadlines = self._column(S_DEADLINE)
        lens = self._column(S_LENKIND)
        for i in range(len(states) - 1, -1, -1):
            st = states[i] & 0xFF
            if st == FREE:
                s[i * SLOT_W + S_AUX] = free
                free = i + 1
                continue
            word = _COUNT_WORD.get(st)
            if word is not None:
                counts[word] += 1
            nbytes += rec_bytes(lens[i] & 0xFFFFFFFF)
            if st in (LEASED, DELAYED) and (not due or deadlines[i] < due):
                due = deadlines[i]
        for word, n in counts.items():
            w[word] = n
        if states:  # a batch that died before storing the token counter used some
            w[SW_TOKEN] = max(w[SW_TOKEN], max(v >> 32 for v in states))
        w[SW_BYTES] = nbytes
        w[SW_DUE] = due
        w[SW_FREE] = free


_COUNT_WORD = {READY: SW_READY, LEASED: SW_LEASED, DELAYED: SW_DELAYED, DEAD: SW_DEAD}
