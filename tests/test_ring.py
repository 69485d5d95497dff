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

from zoldyq.shm.layout import (
    EPOCH_SLACK_US,
    HEADER_BYTES,
    KIND_BYTES,
    KIND_JSON,
    SEQ_MASK,
    W_CLEARED,
    W_DEQ_TOTAL,
    W_ENQ_TOTAL,
    W_EPOCH,
    W_HEAD,
    W_TAIL,
)
from zoldyq.shm.ring import HDR, Ring, RingCorrupt, RingFull, min_ring_size, record_bytes


def make_ring(size: int = 256, max_messages: int = 1000, start: int = 0) -> Ring:
    """A ring whose head and tail both start at offset ``start`` (and sequence 2**32 - 3)."""
    words = memoryview(bytearray(HEADER_BYTES)).cast("Q")
    Ring.format(words, size, max_messages, size // 2 - HDR)
    seq = SEQ_MASK - 2  # sequence numbers wrap during the test
    words[W_TAIL] = words[W_HEAD] = (seq << 32) | start
    words[W_ENQ_TOTAL] = words[W_DEQ_TOTAL] = seq  # as if that many had passed through
    return Ring(words, bytearray(size))


def put(ring: Ring, *payloads: bytes, kind: int = KIND_BYTES, at: int = 7) -> None:
    ring.commit_tail(ring.write([(kind, p) for p in payloads], at), len(payloads), 0)


def take(ring: Ring, n: int = 1) -> list[bytes]:
    records, head, nbytes = ring.read(n)
    ring.commit_head(head, len(records), nbytes)
    return [r[1] for r in records]


def test_record_sizes_are_padded_to_eight() -> None:
    """A record is an 8-byte header word (16 with a full time) plus the payload rounded up
    to 8 bytes: 112 bytes for a 100-byte message."""
    assert HDR == 8
    assert [record_bytes(n) for n in (0, 1, 8, 9, 100)] == [8, 16, 16, 24, 112]
    assert [record_bytes(n, long=True) for n in (0, 1, 100)] == [16, 24, 120]
    assert min_ring_size(100) == 2 * record_bytes(100)
    ring = make_ring(4096)
    put(ring, b"m" * 100, at=1_800_000_000_000_000)
    assert ring.used_bytes() == 112


def test_times_come_back_exact_across_the_epoch() -> None:
    """enqueued_at comes back to the µs: short headers count from the epoch, which moves
    only over an empty ring; a time out of its reach in a busy ring takes a long header."""
    ring = make_ring(4096)
    now = 1_800_000_000_000_000
    put(ring, b"a", at=now)  # empty: the epoch moves
    assert ring.words[W_EPOCH] == now - EPOCH_SLACK_US
    put(ring, b"b", at=now - 1000)  # a clock that stepped back: still in reach
    put(ring, b"c", at=now + 5 * 3600_000_000)  # 5 hours on, ring busy: a long header
    put(ring, b"d", at=-5)  # before 1970: long too
    assert ring.words[W_EPOCH] == now - EPOCH_SLACK_US
    assert ring.used_bytes() == 16 + 16 + 24 + 24
    records, head, nbytes = ring.read(10)
    assert [(r[1], r[2]) for r in records] == [
        (b"a", now), (b"b", now - 1000), (b"c", now + 5 * 3600_000_000), (b"d", -5)]
    ring.commit_head(head, len(records), nbytes)
    put(ring, b"e", at=now + 5 * 3600_000_000)  # empty again: the epoch moves
    assert ring.words[W_EPOCH] == now + 5 * 3600_000_000 - EPOCH_SLACK_US
    assert ring.read(1)[0][0][2] == now + 5 * 3600_000_000
    assert ring.used_bytes() == 16


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
    put(ring, b"x" * 40)  # 48 bytes
    put(ring, b"y" * 56)  # 112 bytes used
    with pytest.raises(RingFull) as info:
        put(ring, b"z" * 9)
    assert info.value.needed_bytes == 16 + 24  # the 16 bytes left at the end, then the record
    assert take(ring, 5) == [b"x" * 40, b"y" * 56]


def test_a_batch_that_does_not_fit_writes_nothing() -> None:
    """put_many is all or nothing: a rejected batch leaves the ring as it was."""
    ring = make_ring(128)
    put(ring, b"keep")
    before = ring.words[W_TAIL]
    with pytest.raises(RingFull):
        put(ring, b"a" * 30, b"b" * 30, b"c" * 30)
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
    ring.data[3] &= 0xC7  # tag 0: no such kind
    with pytest.raises(RingCorrupt, match="bad record at offset 0: kind 0"):
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


def model_record_bytes(payload: bytes, long: bool) -> int:
    """The model's own size of a record: an 8-byte header (16 with the full time), the
    payload padded to 8."""
    return (16 if long else 8) + -(-len(payload) // 8) * 8


class RingVersusModel(RuleBasedStateMachine):
    """The ring behaves like a bounded deque whose byte offsets the model computes itself.

    The model places each record by the rules of ring.py's docstring alone: a record
    starts at the tail unless it would straddle the end, in which case the bytes up to
    the end are padding and it starts at 0. From those offsets it knows the free space,
    so a ring that refuses a batch that fits (or takes one that does not) fails. Its
    clock jumps about (back, and past the epoch's reach); the model keeps its own epoch
    by layout.py's rule, so it knows which records take a long header, and every time
    must come back exact.
    """

    SIZE, MAX = 512, 12
    REACH = 1 << 34  # µs past the epoch a short header holds

    def __init__(self) -> None:
        super().__init__()
        # (payload, offset where it ends, enqueued_at)
        self.model: deque[tuple[bytes, int, int]] = deque()
        self.head = self.tail = 0
        self.clock, self.epoch = 1_800_000_000_000_000, 0

    @rule(step=st.one_of(st.integers(-EPOCH_SLACK_US - 10, 10_000),
                         st.integers(-(1 << 36), 1 << 36)))
    def tick(self, step: int) -> None:
        self.clock += step

    def long_header(self) -> bool:
        """Whether the next put is dated in full (the model's epoch may move first)."""
        if 0 <= self.clock - self.epoch < self.REACH:
            return False
        if self.model:
            return True
        self.epoch = max(0, self.clock - EPOCH_SLACK_US)
        return False

    @initialize(slot=st.integers(0, SIZE // 8 - 1))
    def start_anywhere(self, slot: int) -> None:
        self.head = self.tail = slot * 8
        self.ring = make_ring(self.SIZE, self.MAX, start=self.head)

    def used(self) -> int:
        if not self.model:
            return 0
        return (self.tail - self.head) % self.SIZE or self.SIZE

    def place(self, payloads: list[bytes]) -> tuple[int, list[int]] | None:
        """(bytes the batch takes, where each record ends), or None if it does not fit."""
        if len(self.model) + len(payloads) > self.MAX:
            return None
        pos, need, ends = self.tail, 0, []
        long = self.long_header()
        for p in payloads:
            rec = model_record_bytes(p, long)
            if rec > self.SIZE - pos:  # would straddle the end: pad, start at 0
                need += self.SIZE - pos
                pos = 0
            need += rec
            pos = (pos + rec) % self.SIZE
            ends.append(pos)
        if need > self.SIZE - self.used():
            return None
        return need, ends

    @rule(payloads=st.lists(st.binary(max_size=240), min_size=1, max_size=4))
    def put_many(self, payloads: list[bytes]) -> None:
        planned = self.place(payloads)
        try:
            put(self.ring, *payloads, at=self.clock)
        except RingFull:
            assert planned is None, f"refused a batch that fits ({self.SIZE - self.used()} free)"
            return
        assert planned is not None, "took a batch that does not fit"
        self.model.extend((p, end, self.clock) for p, end in zip(payloads, planned[1],
                                                                  strict=True))
        self.tail = planned[1][-1]

    @rule(payload=st.binary(min_size=200, max_size=240))
    def put_large(self, payload: bytes) -> None:
        self.put_many([payload])

    @rule(n=st.integers(1, 6))
    def get_many(self, n: int) -> None:
        expected = [self.model.popleft() for _ in range(min(n, len(self.model)))]
        records, head, nbytes = self.ring.read(n)
        self.ring.commit_head(head, len(records), nbytes)
        assert [(r[1], r[2]) for r in records] == [(p, at) for p, _, at in expected]
        if expected:
            self.head = expected[-1][1]

    @precondition(lambda self: len(self.model) > 0)
    @rule()
    def clear(self) -> None:
        assert self.ring.clear() == len(self.model)
        self.model.clear()
        self.head = self.tail

    @invariant()
    def offsets_agree(self) -> None:
        words = self.ring.words
        assert (words[W_HEAD] & SEQ_MASK, words[W_TAIL] & SEQ_MASK) == (self.head, self.tail)
        assert self.ring.count() == len(self.model)
        assert self.ring.used_bytes() == self.used()
        assert words[W_EPOCH] == self.epoch


TestRingVersusModel = RingVersusModel.TestCase
TestRingVersusModel.settings = settings(max_examples=150, stateful_step_count=60, deadline=None)
