"""The pure ring over a bytearray: no processes, no shared memory."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from tests.helpers.rings import bare_ring
from zoldyq.shm.layout import (
    BLOCK,
    COMPACT_LEN,
    KIND_BYTES,
    KIND_JSON,
    SEQ_MASK,
    W_CLEARED,
    W_DEQ_TOTAL,
    W_ENQ_TOTAL,
    W_HEAD,
    W_TAIL,
    table_bytes,
)
from zoldyq.shm.ring import (
    COMPACT,
    HDR,
    LONG,
    MEDIUM,
    Record,
    Ring,
    RingCorrupt,
    RingFull,
    date,
    decode,
    header,
    min_ring_size,
    record_bytes,
)


def make_ring(size: int = 256, max_messages: int = 1000, start: int = 0) -> Ring:
    """A ring whose head and tail both start at offset ``start`` (and sequence 2**32 - 3)."""
    ring = bare_ring(size, max_messages, size // 2 - 16)[1]
    words = ring.words
    seq = SEQ_MASK - 2  # sequence numbers wrap during the test
    words[W_TAIL] = words[W_HEAD] = (seq << 32) | start
    words[W_ENQ_TOTAL] = words[W_DEQ_TOTAL] = seq  # as if that many had passed through
    return ring


def put(ring: Ring, *payloads: bytes, kind: int = KIND_BYTES, at: int = 7) -> None:
    ring.commit_tail(ring.write([(kind, p) for p in payloads], at), len(payloads), 0)


def take_records(ring: Ring, n: int = 1) -> list[Record]:
    records, head, nbytes = ring.read(n)
    ring.commit_head(head, len(records), nbytes)
    return records


def take(ring: Ring, n: int = 1) -> list[bytes]:
    return [r[1] for r in take_records(ring, n)]


def test_record_sizes_are_padded_to_four() -> None:
    """A record is a 4-byte header (8 medium, 12 long) plus the payload rounded up to 4
    bytes: 104 bytes for a 100-byte message; payloads of 4 KiB or more are never compact."""
    assert HDR == 4
    assert [record_bytes(n) for n in (0, 1, 4, 5, 100)] == [4, 8, 8, 12, 104]
    assert [record_bytes(100, f) for f in (COMPACT, MEDIUM, LONG)] == [104, 108, 112]
    assert record_bytes(COMPACT_LEN - 1) == COMPACT_LEN + 4
    assert record_bytes(COMPACT_LEN) == COMPACT_LEN + 8
    assert min_ring_size(100) == 224
    ring = make_ring(4096)
    put(ring, b"m" * 100, at=1_800_000_000_000_000)
    assert ring.used_bytes() == 104


def test_times_come_back_exact_in_every_form() -> None:
    """enqueued_at comes back to the µs: a put over an empty ring stores its block's base;
    later ones in a busy block are dated against it, compact within 131 ms, medium within
    4.7 hours, long otherwise (a clock that stepped back, a time before 1970)."""
    ring = make_ring(4096)
    now = 1_800_000_000_000_000
    put(ring, b"a", at=now)  # empty: the base is stored, compact
    assert ring.table[0] == now
    put(ring, b"b", at=now + 131_071)  # compact
    put(ring, b"c", at=now + 131_072)  # medium
    put(ring, b"d", at=now - 1000)  # the clock stepped back: long
    put(ring, b"e", at=now + 5 * 3600_000_000)  # past a medium delta's reach: long
    put(ring, b"f", at=-5)  # before 1970: long
    assert ring.table[0] == now
    assert ring.used_bytes() == 8 + 8 + 12 + 16 + 16 + 16
    records, head, nbytes = ring.read(10)
    assert [(r[1], r[2]) for r in records] == [
        (b"a", now), (b"b", now + 131_071), (b"c", now + 131_072), (b"d", now - 1000),
        (b"e", now + 5 * 3600_000_000), (b"f", -5)]
    ring.commit_head(head, len(records), nbytes)
    put(ring, b"g", at=now + 5 * 3600_000_000)  # empty again: a new base
    assert ring.table[0] == now + 5 * 3600_000_000
    assert ring.read(1)[0][0][2] == now + 5 * 3600_000_000
    assert ring.used_bytes() == 8


def test_a_block_with_an_old_lap_keeps_its_base() -> None:
    """The first record ending in a block stores its base, unless the head lies ahead of
    it in that block (records of the last lap are dated against it): then the base stays
    and the new record is dated against it."""
    ring = make_ring(3 * BLOCK, start=BLOCK - 8)
    t = 1_800_000_000_000_000
    put(ring, b"x" * 100, at=t)  # ends in block 1: its base
    assert (ring.table[0], ring.table[1]) == (0, t)
    while ring.words[W_TAIL] & SEQ_MASK > BLOCK:  # fill to the end and wrap to block 0
        put(ring, b"y" * 100, at=t + 10)
    # the head is still in block 0 (offset BLOCK - 8): its base stays, the wrapped record
    # is dated in full against it (0)
    assert ring.table[0] == 0
    assert ring.used_bytes() % 4 == 0
    take(ring, 1)  # the head moves to block 1
    records = ring.read(1000)[0]
    assert all(ts in (t, t + 10) for _, _, ts, _ in records)
    # block 1 holds the head now: the wrapped tail may take block 0's base, not block 1's
    assert ring.table[1] == t


@given(t=st.one_of(st.integers(-10, 1 << 52), st.integers(0, 1 << 35)),
       base=st.integers(0, 1 << 35), length=st.integers(0, COMPACT_LEN + 100),
       kind=st.sampled_from([KIND_JSON, KIND_BYTES]), free=st.booleans(),
       slot=st.integers(0, BLOCK // 4 - 1))
def test_a_header_decodes_to_what_the_model_says(t: int, base: int, length: int, kind: int,
                                                 free: bool, slot: int) -> None:
    """The model of layout.py's table: a record is long before 1970; over a block free to
    take a new base it is compact (medium from 4 KiB) at delta 0 and stores the base;
    otherwise compact when shorter than 4 KiB and 0 to 131 071 µs past the block's base,
    medium within 2**34 µs, long past that. Whichever it is, its bytes decode to its
    kind, payload and time, and it takes the form's size."""
    size = 4 * BLOCK
    table = memoryview(bytearray(table_bytes(size))).cast("Q")
    for i in range(len(table)):
        table[i] = base
    start = slot * 4
    # taken: the head lies at the record's start (a lap still there)
    form, delta, store = date(table, t, length, start, not free, start, start)
    d = t - base
    if t < 0:
        want = LONG
    elif free:
        want = COMPACT if length < 4096 else MEDIUM
    elif length < 4096 and 0 <= d < 1 << 17:
        want = COMPACT
    else:
        want = MEDIUM if 0 <= d < 1 << 34 else LONG
    assert form == want
    assert (store >= 0) == (free and t >= 0)
    if store >= 0:
        assert store == (start + form + length - 1) // BLOCK
        table[store] = t
    data = bytearray(size)
    payload = bytes([length % 251]) * length
    rec = header(form, length, kind, delta, t) + payload
    assert len(rec) == form + length
    data[start : start + len(rec)] = rec
    assert decode(data, start, size, table) == (kind, start + form, start + len(rec), t)
    assert record_bytes(length, form) == (len(rec) + 3) & ~3


@pytest.mark.parametrize("start", range(0, 256, 8))
def test_fifo_across_the_wrap_from_every_offset(start: int) -> None:
    """Records come out in order whatever offset the ring starts at, wrap included."""
    ring = make_ring(256, start=start)
    sent = []
    for i in range(40):
        payload = bytes([i]) * (i % 23)
        put(ring, payload)
        sent.append(payload)
        if len(sent) > 4:
            assert take(ring) == [sent.pop(0)]
    assert take(ring, 100) == sent
    assert ring.count() == 0
    assert ring.used_bytes() == 0


def test_full_by_count_rejects_and_keeps_everything() -> None:
    """A ring at max_messages rejects a put and keeps every accepted record."""
    ring = make_ring(1024, max_messages=3)
    put(ring, b"a", b"b", b"c")
    with pytest.raises(RingFull) as info:
        put(ring, b"d")
    assert info.value.count == 3
    assert take(ring, 10) == [b"a", b"b", b"c"]


def test_full_by_bytes_reports_what_was_needed() -> None:
    """A ring without room for the bytes rejects, saying how many were needed."""
    ring = make_ring(128)
    put(ring, b"x" * 40)  # 44 bytes
    put(ring, b"y" * 56)  # 104 bytes used
    with pytest.raises(RingFull) as info:
        put(ring, b"z" * 20)  # its long form would not fit before the end: it wraps
    assert info.value.needed_bytes == 24 + 24  # the 24 bytes left at the end, then the record
    assert take(ring, 5) == [b"x" * 40, b"y" * 56]


def test_a_batch_that_does_not_fit_writes_nothing() -> None:
    """put_many is all or nothing: a rejected batch leaves the ring as it was."""
    ring = make_ring(128)
    put(ring, b"keep")
    before = ring.words[W_TAIL]
    with pytest.raises(RingFull):
        put(ring, b"a" * 36, b"b" * 36, b"c" * 36)
    assert ring.words[W_TAIL] == before
    assert take(ring, 5) == [b"keep"]


def test_written_but_uncommitted_records_are_invisible() -> None:
    """Records become visible only with the tail store (the commit point)."""
    ring = make_ring()
    new_tail = ring.write([(KIND_JSON, b"1")], 5)
    assert ring.count() == 0
    assert ring.read(10)[0] == []
    ring.commit_tail(new_tail, 1, 1)
    assert ring.count() == 1
    assert ring.read(10)[0] == [(KIND_JSON, b"1", 5, None)]


def test_an_empty_ring_always_fits_a_maximal_record() -> None:
    """With records at most half the ring, an empty ring has room at any offset."""
    for start in range(0, 256, 8):
        ring = make_ring(256, start=start)
        put(ring, b"m" * (128 - HDR))
        assert take(ring) == [b"m" * (128 - HDR)]


def test_clear_drops_committed_records_only() -> None:
    """clear() empties the ring and counts what it dropped; later puts work."""
    ring = make_ring()
    put(ring, b"a", b"b")
    assert ring.clear() == 2
    assert ring.count() == 0
    assert ring.words[W_CLEARED] == 2
    put(ring, b"c")
    assert take(ring) == [b"c"]


def test_a_corrupt_record_is_never_returned() -> None:
    """A record that does not parse raises RingCorrupt instead of coming out."""
    ring = make_ring()
    put(ring, b"abc")
    ring.data[0] &= 0xF8  # tag 0: no such kind
    with pytest.raises(RingCorrupt, match="bad record at offset 0: tag 0"):
        ring.read(1)


def test_repair_levels_totals_with_the_committed_sequence() -> None:
    """A writer that died between commit and totals leaves totals the repair fixes."""
    ring = make_ring()
    start_total = ring.words[W_ENQ_TOTAL]
    ring.words[W_TAIL] = ring.write([(KIND_BYTES, b"a"), (KIND_BYTES, b"b")], 1)  # no totals
    _, head, _ = ring.read(1)
    ring.words[W_HEAD] = head
    ring.repair_put_side()
    ring.repair_get_side()
    assert ring.words[W_ENQ_TOTAL] == start_total + 2
    assert ring.words[W_DEQ_TOTAL] == start_total + 1
    ring.repair_put_side()  # idempotent
    assert ring.words[W_ENQ_TOTAL] == start_total + 2


@given(
    st.integers(0, 31).map(lambda k: k * 8),
    st.lists(st.binary(max_size=100), max_size=30),
)
def test_any_payloads_round_trip(start: int, payloads: list[bytes]) -> None:
    """Whatever bytes go in come out unchanged and in order."""
    ring = make_ring(256, start=start)
    out = []
    for p in payloads:
        try:
            put(ring, p)
        except RingFull:
            out.extend(take(ring, 100))
            put(ring, p)
    out.extend(take(ring, 100))
    assert out == payloads


class RingVersusModel(RuleBasedStateMachine):
    """The ring behaves like a bounded deque and every queued time comes back exact.

    The ring spans several blocks and is laid out from any offset, payloads from empty to
    over a compact header's reach; the clock ticks (µs, past a compact delta's reach, past
    a medium one's, back), the ring drains, clears and rewinds to offset 0 as a trim does.
    After every step every queued record is read back (not taken): its payload and time
    are the model's, so no block base moved under a queued record, whatever lap, form or
    block boundary it was written across.
    """

    SIZE, MAX = 5 * BLOCK, 40

    def __init__(self) -> None:
        super().__init__()
        self.model: deque[tuple[bytes, int]] = deque()
        self.clock = 1_800_000_000_000_000

    @initialize(slot=st.integers(0, SIZE // 4 - 1))
    def start_anywhere(self, slot: int) -> None:
        self.ring = make_ring(self.SIZE, self.MAX, start=slot * 4)

    @rule(step=st.one_of(st.integers(0, 2000), st.integers(125_000, 140_000),
                         st.integers(-3000, -1), st.sampled_from([1 << 34, 10 << 34])))
    def tick(self, step: int) -> None:
        self.clock += step

    @rule(lengths=st.lists(st.one_of(st.integers(0, 300), st.integers(1000, 2500),
                                     st.integers(COMPACT_LEN - 2, COMPACT_LEN + 200)),
                           min_size=1, max_size=4))
    def put_many(self, lengths: list[int]) -> None:
        payloads = [bytes([n % 251]) * n for n in lengths]
        count = self.ring.count()
        try:
            put(self.ring, *payloads, at=self.clock)
        except RingFull:
            # refused only when full by count or short of room (records take <= 12 + n + 3)
            assert (count + len(payloads) > self.MAX
                    or self.ring.used_bytes() + sum(12 + n + 3 for n in lengths)
                    + 2 * max(lengths) + 30 > self.SIZE), "refused a batch that fits"
            return
        self.model.extend((p, self.clock) for p in payloads)

    @rule(n=st.integers(1, 6))
    def get_many(self, n: int) -> None:
        expected = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        assert [(r[1], r[2]) for r in take_records(self.ring, n)] == expected

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        assert self.ring.clear() == len(self.model)
        self.model.clear()

    @precondition(lambda self: len(self.model) == 0)
    @rule()
    def rewind(self) -> None:
        """What queue.trim and the C path's rewind do over an empty ring."""
        words = self.ring.words
        words[W_TAIL] = words[W_TAIL] & ~SEQ_MASK
        words[W_HEAD] = words[W_HEAD] & ~SEQ_MASK

    @invariant()
    def every_queued_time_is_exact(self) -> None:
        if not hasattr(self, "ring"):
            return
        assert self.ring.count() == len(self.model)
        records = self.ring.read(self.MAX)[0]
        assert [(r[1], r[2]) for r in records] == list(self.model)


TestRingVersusModel = RingVersusModel.TestCase
TestRingVersusModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
