"""The snapshot file's bytes: encode and decode, pure (tested on bytes like the ring).

File format (little-endian), version ``VERSION``:

    header, 64 bytes: magic b"ZQSNAP\\0\\0", version u32, queue count u32,
                      created_at µs u64, body length u64,
                      SHA-256 of (header bytes 0-31 + body)
    body, per queue:  name length u16, name, max_messages u64, max_bytes u64,
                      max_message_bytes u64, record count u64,
                      then per record: length u32, kind u32 (1 JSON, 2 bytes),
                      enqueued_at µs i64, data

``decode`` checks magic, version, length and checksum, then parses and
validates every record (JSON records must parse, caps within every engine's
bounds), so a store writes nothing from a file that is not whole.
"""

from __future__ import annotations

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
VERSION = 1
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


def encode(images: Sequence[QueueImage], created_at: int) -> bytes:
    """The whole file for ``images``, checksum included."""
    body = b"".join(_section(i) for i in images)
    head = HEADER.pack(MAGIC, VERSION, len(images), created_at, len(body), b"")[:32]
    return head + hashlib.sha256(head + body).digest() + body


def _section(image: QueueImage) -> bytes:
    raw = image.name.encode("ascii")
    parts = [NAME_LEN.pack(len(raw)), raw, QUEUE.pack(*image.caps, len(image.records))]
    for (kind, data), stamp in zip(image.records, image.stamps, strict=True):
        parts.append(RECORD.pack(len(data), kind, stamp))
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
        if version != VERSION:
            raise SnapshotError(name, f"format version {version}, this ZoldyQ reads {VERSION}")
        if len(view) != HEADER.size + body_len:
            raise SnapshotError(
                name, f"truncated or padded: {len(view)} bytes, expected {HEADER.size + body_len}"
            )
        h = hashlib.sha256(view[:32])
        h.update(view[HEADER.size :])
        if h.digest() != digest:
            raise SnapshotError(name, "checksum mismatch (the file is corrupt)")
        return list(_sections(name, view, count))
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


def _sections(name: str, view: memoryview, count: int) -> Iterator[QueueImage]:
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
        records, stamps = [], []
        for _ in range(n):
            length, kind, stamp = RECORD.unpack(take(RECORD.size))
            data = bytes(take(length))
            if kind == KIND_JSON:
                try:
                    orjson.loads(data)
                except orjson.JSONDecodeError:
                    raise SnapshotError(name, f"queue '{qname}': a record is not JSON") from None
            elif kind != KIND_BYTES:
                raise SnapshotError(name, f"queue '{qname}': unknown record kind {kind}")
            records.append((kind, data))
            stamps.append(stamp)
        yield QueueImage(qname, caps, records, stamps)
    if off != end:
        raise SnapshotError(name, f"{end - off} stray bytes after the last queue")
