"""The snapshot file format on bytes alone: what is encoded decodes the same, all else fails."""

from __future__ import annotations

import hashlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zoldyq.api import KIND_BYTES, KIND_JSON, Caps
from zoldyq.errors import SnapshotError
from zoldyq.ops.snapshot.format import HEADER, QueueImage, decode, encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip
records = st.one_of(
    json_values.map(lambda v: (KIND_JSON, orjson.dumps(v))),
    st.binary(max_size=64).map(lambda b: (KIND_BYTES, b)),
)
caps = st.builds(Caps, st.integers(1, 1 << 30), st.integers(1, (1 << 32) - 8),
                 st.integers(1, 64 << 20))  # fmt: skip


@st.composite
def images(draw: st.DrawFn) -> list[QueueImage]:
    names = draw(st.lists(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True), max_size=4,
                          unique=True))  # fmt: skip
    out = []
    for name in names:
        recs = draw(st.lists(records, max_size=6))
        stamps = draw(st.lists(st.integers(0, 2**62), min_size=len(recs), max_size=len(recs)))
        out.append(QueueImage(name, draw(caps), recs, stamps))
    return out


def resign(data: bytearray) -> bytes:
    """The file with its checksum recomputed, so only the change under test counts."""
    data[32:64] = hashlib.sha256(bytes(data[:32]) + bytes(data[HEADER.size :])).digest()
    return bytes(data)


@settings(max_examples=40)
@given(images(), st.integers(0, 2**63))
def test_what_is_encoded_decodes_the_same(saved: list[QueueImage], created_at: int) -> None:
    """Queues, caps, records and stamps come back exactly, in order."""
    assert decode(encode(saved, created_at), "s") == saved


@settings(max_examples=40)
@given(images(), st.data())
def test_a_cut_file_is_refused(saved: list[QueueImage], data: st.DataObject) -> None:
    """A file cut at any length is refused as truncated."""
    whole = encode(saved, 1)
    cut = data.draw(st.integers(0, len(whole) - 1))
    with pytest.raises(SnapshotError, match="truncated"):
        decode(whole[:cut], "s")


@settings(max_examples=40)
@given(images(), st.data())
def test_a_flipped_bit_is_refused(saved: list[QueueImage], data: st.DataObject) -> None:
    """Any flipped bit fails the checksum or an earlier header check."""
    bad = bytearray(encode(saved, 1))
    bad[data.draw(st.integers(0, len(bad) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(SnapshotError):
        decode(bytes(bad), "s")


@given(st.binary(max_size=300))
def test_resigned_garbage_is_refused_or_well_formed(body: bytes) -> None:
    """A body of random bytes under a valid header and checksum never crashes the decoder:
    it is refused with SnapshotError or it decodes to valid images."""
    head = HEADER.pack(b"ZQSNAP\0\0", 1, 1, 0, len(body), b"")
    try:
        out = decode(resign(bytearray(head + body)), "s")
    except SnapshotError:
        return
    assert encode(out, 0)[HEADER.size :] == body


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [(0, 0, "max_messages must be 1..1073741824, got 0"),
     (1, 1 << 33, "max_bytes must be 1..4294967288, got 8589934592"),
     (2, (64 << 20) + 1, "max_message_bytes must be 1..67108864, got 67108865")],
)  # fmt: skip
def test_caps_beyond_every_engine_are_refused(field: int, value: int, problem: str) -> None:
    """Caps outside the bounds of api.py are refused when decoding, naming the queue."""
    good = [4, 4096, 512]
    good[field] = value
    data = encode([QueueImage("q", Caps(*good), [], [])], 0)
    with pytest.raises(SnapshotError, match=rf"^snapshot 's' was not loaded: queue 'q': {problem}"):
        decode(data, "s")


def test_stray_bytes_and_duplicate_queues_are_refused() -> None:
    """Bytes after the last queue, or one queue twice, are refused."""
    one = QueueImage("q", Caps(4, 4096, 512), [(KIND_BYTES, b"x")], [5])
    data = bytearray(encode([one], 0))
    data[HEADER.size - 40 : HEADER.size - 32] = (len(data) - HEADER.size + 3).to_bytes(8, "little")
    with pytest.raises(SnapshotError, match="3 stray bytes after the last queue"):
        decode(resign(data + b"abc"), "s")
    twice = bytearray(encode([one, one], 0))
    with pytest.raises(SnapshotError, match="queue 'q' appears twice"):
        decode(bytes(twice), "s")
