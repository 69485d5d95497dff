"""The snapshot file's bytes: encode and decode, pure (tested on bytes like the ring).

File format (little-endian), version ``VERSION``:

    header, 64 bytes: magic b"ZQSNAP\\0\\0", version u32, queue count u32,
                      created_at µs u64, body length u64,
                      SHA-256 of (header bytes 0-31 + body)
    body, per queue:  name length u16, name, max_messages u64, max_bytes u64,
                      max_message_bytes u64, record count u64,
                      then per record: length u32, kind u32, stamp µs i64, data

A record's kind word is ``kind | deliveries << 8 | delayed << 31`` (kind 1 JSON,
2 bytes; version 1 files hold the kind alone): a message that was leased or given
back keeps its delivery count (it is restored ready, at the head), and a delayed
one's stamp is its ``deliver_at`` instead of its ``enqueued_at``.

``decode`` checks magic, version, length and checksum, then parses and
validates every record (JSON records must parse, caps within every engine's
bounds), so a store writes nothing from a file that is not whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from zoldyq.api import (
    KIND_BYTES,
    KIND_JSON,
    MAX_BYTES_LIMIT,
    MAX_MESSAGE_BYTES_LIMIT,
    MAX_MESSAGES_LIMIT,
    Caps,
    check_queue_name,
)
from zoldyq.errors import InvalidName, SnapshotError

MAGIC = b"ZQSNAP\0\0"
VERSION = 2
READS = (1, 2)  # version 1: no delivery counts, no delayed messages
DELAYED = 1 << 31
MAX_DELIVERIES = (1 << 23) - 1
HEADER = struct.Struct("<8sIIQQ32s")
QUEUE = struct.Struct("<QQQQ")
RECORD = struct.Struct("<IIq")
NAME_LEN = struct.Struct("<H")


@dataclass
class QueueImage:
    """One queue as saved: its caps and its messages in order."""

    name: str
    caps: Caps
    records: list[tuple[int, bytes]]  # (kind, data), as put_records takes them
    stamps: list[int]  # enqueued_at µs of each record when it was saved
    # per record (deliveries, deliver_at µs or 0), or empty: all plain ready messages
    extras: list[tuple[int, int]] = dataclasses.field(default_factory=list)


def encode(images: Sequence[QueueImage], created_at: int) -> bytes:
    """The whole file for ``images``, checksum included."""
    body = b"".join(_section(i) for i in images)
    head = HEADER.pack(MAGIC, VERSION, len(images), created_at, len(body), b"")[:32]
    return head + hashlib.sha256(head + body).digest() + body


def _section(image: QueueImage) -> bytes:
    raw = image.name.encode("ascii")
    parts = [NAME_LEN.pack(len(raw)), raw, QUEUE.pack(*image.caps, len(image.records))]
    extras = image.extras or [(0, 0)] * len(image.records)
    for (kind, data), stamp, (deliveries, at) in zip(image.records, image.stamps, extras,
                                                     strict=True):
        word = kind | min(deliveries, MAX_DELIVERIES) << 8 | (DELAYED if at else 0)
        parts.append(RECORD.pack(len(data), word, at or stamp))
        parts.append(data)
    return b"".join(parts)


def decode(data: bytes | memoryview, name: str) -> list[QueueImage]:
    """Parse and check a whole file; raises SnapshotError (naming snapshot ``name``)."""
    view = memoryview(data)
    try:
        if len(view) < HEADER.size:
            raise SnapshotError(name, f"truncated: {len(view)} bytes, not even a header")
        magic, version, count, _, body_len, digest = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise SnapshotError(name, "not a ZoldyQ snapshot (bad magic)")
        if version not in READS:
            raise SnapshotError(name, f"format version {version}, this ZoldyQ reads "
                                f"{' and '.join(map(str, READS))}")
        if len(view) != HEADER.size + body_len:
            raise SnapshotError(
                name, f"truncated or padded: {len(view)} bytes, expected {HEADER.size + body_len}"
            )
        h = hashlib.sha256(view[:32])
        h.update(view[HEADER.size :])
        if h.digest() != digest:
            raise SnapshotError(name, "checksum mismatch (the file is corrupt)")
        return list(_sections(name, view, count, version))
    finally:
        view.release()


def _check_caps(name: str, qname: str, caps: Caps) -> Caps:
    for field, value, top in zip(
        caps._fields, caps, (MAX_MESSAGES_LIMIT, MAX_BYTES_LIMIT, MAX_MESSAGE_BYTES_LIMIT),
        strict=True,
    ):
        if not 1 <= value <= top:
            raise SnapshotError(name, f"queue '{qname}': {field} must be 1..{top}, got {value}")
    return caps


def _sections(name: str, view: memoryview, count: int, version: int) -> Iterator[QueueImage]:
    off, end = HEADER.size, len(view)
    seen = set()

    def take(n: int) -> memoryview:
        nonlocal off
        if off + n > end:
            raise SnapshotError(name, f"section runs past the end at byte {off}")
        chunk = view[off : off + n]
        off += n
        return chunk

    for _ in range(count):
        (nlen,) = NAME_LEN.unpack(take(NAME_LEN.size))
        qname = bytes(take(nlen)).decode("ascii", "replace")
        try:
            check_queue_name(qname)
        except InvalidName:
            raise SnapshotError(name, f"bad queue name {qname!r}") from None
        if qname in seen:
            raise SnapshotError(name, f"queue '{qname}' appears twice")
        seen.add(qname)
        mm, mb, mmb, n = QUEUE.unpack(take(QUEUE.size))
        caps = _check_caps(name, qname, Caps(mm, mb, mmb))
        records, stamps, extras = [], [], []
        for _ in range(n):
            length, word, stamp = RECORD.unpack(take(RECORD.size))
            data = bytes(take(length))
            kind = word & 0xFF if version > 1 else word
            extras.append(((word >> 8) & MAX_DELIVERIES, stamp if word & DELAYED else 0)
                          if version > 1 else (0, 0))
            if kind == KIND_JSON:
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise SnapshotError(name, f"queue '{qname}': a record is not JSON") from None
            elif kind != KIND_BYTES:
                raise SnapshotError(name, f"queue '{qname}': unknown record kind {kind}")
            records.append((kind, data))
            stamps.append(stamp)
        plain = all(e == (0, 0) for e in extras)
        yield QueueImage(qname, caps, records, stamps, [] if plain else extras)
    if off != end:
        raise SnapshotError(name, f"{end - off} stray bytes after the last queue")
