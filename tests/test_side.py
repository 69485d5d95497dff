"""The side table on plain bytearrays: slots, the data ring's reclaim and relocation, repair."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zoldyq.shm.layout import (
    HEADER_BYTES,
    SLOT_W,
    SW_BATCH,
    SW_DHEAD,
    SW_DTAIL,
    SW_DUE,
    SW_HIGH,
    W_MAX_MESSAGE_BYTES,
)
from zoldyq.shm.side import (
    DEAD,
    DELAYED,
    FREE,
    IN,
    LEASED,
    PENDING,
    READY,
    STAGED,
    Side,
    SideFull,
    rec_bytes,
)

KIND = 1


def make(nslots: int = 16, dsize: int = 1024, max_message: int = 120) -> Side:
    words = memoryview(bytearray(HEADER_BYTES)).cast("Q")
    words[W_MAX_MESSAGE_BYTES] = max_message
    Side.format(words, nslots, dsize)
    slots = memoryview(bytearray(nslots * SLOT_W * 8)).cast("Q")
    return Side(words, slots, bytearray(dsize))


def live(side: Side) -> dict[int, bytes]:
    return {i: side.payload(i)[1] for i in range(side.words[SW_HIGH]) if side.state(i)[2] != FREE}


def test_store_take_and_free_reuse_slots() -> None:
    """A stored message reads back exactly; a freed slot and its bytes are reused."""
    side = make()
    idx, token = side.store(KIND, b"hello", 7, READY, key=7)
    assert side.payload(idx) == (KIND, b"hello", 7)
    assert side.state(idx) == (token, 0, READY)
    assert side.count() == 1
    assert side.ready(10) == [idx]
    side.set_state(idx, FREE)
    assert side.count() == 0
    assert side.ready(10) == []
    again, _ = side.store(KIND, b"x", 8, READY)
    assert again == idx


def test_ready_is_served_by_key_then_seq() -> None:
    """Returned messages come back in first-enqueue order, whatever order they returned in."""
    side = make()
    a, _ = side.store(KIND, b"a", 30, READY, key=30)
    b, _ = side.store(KIND, b"b", 10, READY, key=10, seq=1)
    c, _ = side.store(KIND, b"c", 10, READY, key=10, seq=0)
    assert side.ready(10) == [c, b, a]
    assert side.ready(2) == [c, b]


def test_reclaim_due_gives_back_expired_and_promotes_due() -> None:
    """Expired leases come back READY (DEAD past max_deliveries), due delays become READY."""
    side = make()
    lease, _ = side.store(KIND, b"l", 1, LEASED, deadline=100, deliveries=1)
    tired, _ = side.store(KIND, b"t", 2, LEASED, deadline=100, deliveries=3)
    late, _ = side.store(KIND, b"d", 3, DELAYED, deadline=200)
    assert side.words[SW_DUE] == 100
    assert side.reclaim_due(99, 3) == 0
    assert side.reclaim_due(150, 3) == 2
    assert side.state(lease)[2] == READY
    assert side.state(tired)[2] == DEAD
    assert side.state(late)[2] == DELAYED
    assert side.words[SW_DUE] == 200
    assert side.reclaim_due(200, 3) == 1
    assert side.state(late)[2] == READY
    assert side.words[SW_DUE] == 0


def test_ack_needs_the_token_and_an_unexpired_lease() -> None:
    """An ack with a stale token, after the deadline or twice is refused."""
    side = make()
    idx, token = side.store(KIND, b"m", 1, LEASED, deadline=100, deliveries=1)
    assert not side.ack(idx, token + 1, 50)
    assert not side.ack(idx, token, 100)
    assert side.ack(idx, token, 99)
    assert not side.ack(idx, token, 99)
    assert not side.ack(999, token, 1)


def test_full_slots_or_data_raise_and_write_nothing() -> None:
    """No slot or no data room left: SideFull, and the table is as before."""
    side = make(nslots=2, dsize=256, max_message=40)
    side.store(KIND, b"1", 1, READY)
    side.store(KIND, b"2", 1, READY)
    try:
        side.store(KIND, b"3", 1, READY)
        raise AssertionError("stored a third message in two slots")
    except SideFull:
        pass
    side = make(nslots=8, dsize=512, max_message=120)
    side.store(KIND, bytes(200), 1, READY)
    try:
        side.store(KIND, bytes(100), 1, READY)
        raise AssertionError("stored past the data ring")
    except SideFull:
        pass
    assert side.count() == 1


def test_a_long_lived_record_at_the_data_head_is_relocated() -> None:
    """Churn behind a message that stays does not fill the data ring: it is moved, intact."""
    side = make(nslots=8, dsize=512, max_message=40)
    keep, _ = side.store(KIND, b"keep me", 1, LEASED, deadline=1 << 60)
    for n in range(200):
        idx, _ = side.store(KIND, bytes([n % 256]) * 40, 2, READY)
        side.set_state(idx, FREE)
    assert side.payload(keep) == (KIND, b"keep me", 1)
    w = side.words
    assert w[SW_DTAIL] - w[SW_DHEAD] <= side.dsize


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 120)), max_size=120))
def test_random_store_and_free_keep_every_live_payload(ops: list[tuple[bool, int]]) -> None:
    """Any mix of stores and frees: every live slot reads back exactly what was stored."""
    side = make(nslots=12, dsize=1024 + 2 * rec_bytes(120))
    model: dict[int, bytes] = {}
    for n, (free, size) in enumerate(ops):
        if free and model:
            idx = sorted(model)[size % len(model)]
            side.set_state(idx, FREE)
            del model[idx]
            continue
        payload = bytes([n % 251]) * size
        try:
            idx, _ = side.store(KIND, payload, n, READY)
        except SideFull:
            # full only when the slots are, or the live bytes (plus wrap padding) are
            assert len(model) == 12 or sum(rec_bytes(len(p)) for p in model.values()) \
                + 2 * rec_bytes(size) > 1024
            continue
        model[idx] = payload
    assert live(side) == model
    assert side.count() == len(model)


def test_repair_resolves_what_a_dead_holder_left() -> None:
    """PENDING by the ring's head, STAGED by the committed batch, IN by the source slot."""
    side = make()
    taken, _ = side.store(KIND, b"p1", 1, PENDING, aux=5)  # head is past 5: committed
    kept, _ = side.store(KIND, b"p2", 1, PENDING, aux=6)  # head is at 6: still in the ring
    side.words[SW_BATCH] = 1  # batch 1 was committed, batch 2 was not
    done, _ = side.store(KIND, b"s1", 1, STAGED, aux=1)
    undone, _ = side.store(KIND, b"s2", 1, STAGED, aux=2)
    moved, _ = side.store(KIND, b"i1", 1, IN, aux=3 << 32 | 9, origin=1)
    rolled, _ = side.store(KIND, b"i2", 1, IN, aux=4 << 32 | 9, origin=1)
    source = {3: 9 << 32 | FREE, 4: 9 << 32 | DEAD}
    side.repair(6, lambda origin, idx: source[idx])
    states = {i: side.state(i)[2] for i in (taken, kept, done, undone, moved, rolled)}
    assert states == {taken: LEASED, kept: FREE, done: DELAYED, undone: FREE,
                      moved: READY, rolled: FREE}
    assert side.count() == 3
    again = side.store(KIND, b"z", 1, READY)[0]
    assert again in (kept, undone, rolled)  # the free list was rebuilt
