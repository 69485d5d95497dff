"""Snapshots: every queue (or one) written to a file and loaded back.

Files live only in the configured snapshot directory: a snapshot is named,
never given as a path, and the name is checked (``[A-Za-z0-9_-]`` first,
then ``[A-Za-z0-9_.-]``, 64 characters at most) and resolved inside that
directory, symlinks included. A save writes a temporary file beside the
target, fsyncs it and renames it over the target: readers see the old file
or the new one, never half of one.

File format (little-endian), version ``VERSION``:

    header, 64 bytes: magic b"ZQSNAP\\0\\0", version u32, queue count u32,
                      created_at µs u64, body length u64,
                      SHA-256 of (header bytes 0-31 + body)
    body, per queue:  name length u16, name, max_messages u64, max_bytes u64,
                      max_message_bytes u64, record count u64,
                      then per record: length u32, kind u32 (1 JSON, 2 bytes),
                      enqueued_at µs i64, data

A load checks magic, version, length and checksum, then parses and
validates every record (JSON records must parse) and checks that every
queue has room, all before it writes anything; each queue is then filled
with one all-or-none put. Loaded messages are appended after any already
queued and get a new ``enqueued_at`` (the engine stamps puts); the saved
one stays in the file. A save reads each queue under its get lock without
removing anything, so it is a consistent cut of that queue; consumers of
that queue wait for the read (about 1 µs per message).
"""

from __future__ import annotations

import hashlib
import logging
import mmap
import os
import re
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from zoldyq import broker as engine
from zoldyq.api import KIND_BYTES, KIND_JSON
from zoldyq.errors import (
    BadSnapshotName,
    InvalidName,
    QueueNotFound,
    SnapshotConflict,
    SnapshotError,
    SnapshotNotFound,
    SnapshotsDisabled,
    ZoldyQError,
)
from zoldyq.settings import Settings
from zoldyq.shm import names
from zoldyq.shm.broker import Broker
from zoldyq.shm.registry import Caps
from zoldyq.shm.ring import record_bytes

MAGIC = b"ZQSNAP\0\0"
VERSION = 1
SUFFIX = ".zqsnap"
HEADER = struct.Struct("<8sIIQQ32s")
QUEUE = struct.Struct("<QQQQ")
RECORD = struct.Struct("<IIq")
log = logging.getLogger("zoldyq.ops.snapshot")
_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")


@dataclass
class QueueImage:
    name: str
    caps: Caps
    records: list[tuple[int, bytes]]  # (kind, data), as put_records takes them
    stamps: list[int]  # enqueued_at µs of each record when it was saved


def path_for(directory: str | os.PathLike[str] | None, name: str) -> Path:
    """The file of snapshot ``name`` inside ``directory``; nothing else is ever returned.

    Raises:
        SnapshotsDisabled: no directory is configured.
        InvalidName: ``name`` is not a plain snapshot name.
    """
    if not directory:
        raise SnapshotsDisabled()
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadSnapshotName(name, "snapshot name")
    if not name.endswith(SUFFIX):
        name += SUFFIX
    base = Path(directory).resolve()
    path = base / name
    if path.resolve().parent != base:
        raise BadSnapshotName(name, "snapshot name")  # a symlink out of the directory
    return path


def default_name(settings: Settings) -> str:
    """What --snapshot-on-exit writes and --restore reads: the namespace's name."""
    return settings.namespace


# -- save --------------------------------------------------------------------------


def _peek(broker: Broker, name: str) -> QueueImage:
    """Every message of ``name`` without removing any (under the get lock)."""
    entry = broker.registry.lookup(names.check_queue_name(name))
    if entry is None:
        raise QueueNotFound(name)
    messages = broker.queue(name).peek()
    return QueueImage(name, entry.caps, [(m.kind, m.data) for m in messages],
                      [m.enqueued_at for m in messages])


def _section(image: QueueImage) -> bytes:
    raw = image.name.encode("ascii")
    parts = [struct.pack("<H", len(raw)), raw, QUEUE.pack(*image.caps, len(image.records))]
    for (kind, data), stamp in zip(image.records, image.stamps, strict=True):
        parts.append(RECORD.pack(len(data), kind, stamp))
        parts.append(data)
    return b"".join(parts)


def save(
    broker: Broker, directory: str | os.PathLike[str] | None, name: str, queue: str | None = None
) -> dict[str, Any]:
    """Write every queue (or ``queue``) to snapshot ``name``; returns a summary."""
    path = path_for(directory, name)
    wanted = [queue] if queue is not None else broker.queues()
    images = []
    for qname in wanted:
        try:
            images.append(_peek(broker, qname))
        except QueueNotFound:
            if queue is not None:
                raise  # asked for by name; in "all" it was deleted while we looked
    body = b"".join(_section(i) for i in images)
    head = HEADER.pack(MAGIC, VERSION, len(images), time.time_ns() // 1000, len(body), b"")
    digest = hashlib.sha256(head[:32] + body).digest()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(head[:32] + digest)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
    return {
        "snapshot": path.name.removesuffix(SUFFIX),
        "file": str(path),
        "queues": len(images),
        "messages": sum(len(i.records) for i in images),
        "bytes": HEADER.size + len(body),
    }


# -- load --------------------------------------------------------------------------


def read(directory: str | os.PathLike[str] | None, name: str) -> list[QueueImage]:
    """Parse and check snapshot ``name`` completely; raises SnapshotError if anything is off."""
    path = path_for(directory, name)
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise SnapshotNotFound(name) from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size < HEADER.size:
            raise SnapshotError(name, f"truncated: {size} bytes, not even a header")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _parse(name, memoryview(mm), size)


def _parse(name: str, view: memoryview, size: int) -> list[QueueImage]:
    try:
        magic, version, count, _, body_len, digest = HEADER.unpack_from(view)
        if magic != MAGIC:
            raise SnapshotError(name, "not a ZoldyQ snapshot (bad magic)")
        if version != VERSION:
            raise SnapshotError(name, f"format version {version}, this ZoldyQ reads {VERSION}")
        if size != HEADER.size + body_len:
            raise SnapshotError(
                name, f"truncated or padded: {size} bytes, expected {HEADER.size + body_len}"
            )
        h = hashlib.sha256(view[:32])
        h.update(view[HEADER.size :])
        if h.digest() != digest:
            raise SnapshotError(name, "checksum mismatch (the file is corrupt)")
        images = list(_sections(name, view, count))
    finally:
        view.release()
    return images


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
        (nlen,) = struct.unpack("<H", take(2))
        qname = bytes(take(nlen)).decode("ascii", "replace")
        try:
            names.check_queue_name(qname)
        except InvalidName:
            raise SnapshotError(name, f"bad queue name {qname!r}") from None
        if qname in seen:
            raise SnapshotError(name, f"queue '{qname}' appears twice")
        seen.add(qname)
        *caps, n = QUEUE.unpack(take(QUEUE.size))
        try:
            checked = Caps(*caps).checked()
        except ZoldyQError as ex:
            raise SnapshotError(name, f"queue '{qname}': {ex}") from None
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
        yield QueueImage(qname, checked, records, stamps)
    if off != end:
        raise SnapshotError(name, f"{end - off} stray bytes after the last queue")


def _room(broker: Broker, images: list[QueueImage]) -> None:
    """Raise SnapshotConflict unless every image fits now (checked before any write)."""
    new = {i.name for i in images if not broker.exists(i.name)}
    free_slots = broker.max_queues - len(broker.queues())
    if len(new) > free_slots:
        raise SnapshotConflict(f"{len(new)} queues to create, room for {free_slots} (max_queues)")
    for image in images:
        biggest = max((len(d) for _, d in image.records), default=0)
        if image.name in new:  # a fresh ring fills from offset 0: no wrap to allow for
            caps, size, used = image.caps, 0, 0
        else:  # records may have to skip the ring's end: allow one record of slack
            s = broker.queue(image.name).stats()
            caps = Caps(s["capacity"], s["max_bytes"], s["max_message_bytes"])
            size, used = s["size"], s["bytes"] + record_bytes(biggest)
        if biggest > caps.max_message_bytes:
            raise SnapshotConflict(
                f"queue '{image.name}' takes messages up to {caps.max_message_bytes} bytes, "
                f"the snapshot holds one of {biggest}"
            )
        if size + len(image.records) > caps.max_messages:
            raise SnapshotConflict(
                f"queue '{image.name}' has room for {caps.max_messages - size} more "
                f"messages, the snapshot holds {len(image.records)}"
            )
        need = sum(record_bytes(len(d)) for _, d in image.records)
        if used + need > caps.max_bytes:
            raise SnapshotConflict(
                f"queue '{image.name}' has {caps.max_bytes - used} ring bytes free, "
                f"the snapshot needs {need}"
            )


def load(
    broker: Broker, directory: str | os.PathLike[str] | None, name: str, queue: str | None = None
) -> dict[str, Any]:
    """Load snapshot ``name`` (every queue, or ``queue``) into the namespace; a summary."""
    images = read(directory, name)
    if queue is not None:
        images = [i for i in images if i.name == names.check_queue_name(queue)]
        if not images:
            raise SnapshotError(name, f"it holds no queue '{queue}'")
    _room(broker, images)
    created: list[str] = []
    try:
        for image in images:
            if not broker.exists(image.name):
                broker.create_queue(image.name, *image.caps)
                created.append(image.name)
            if image.records:
                broker.queue(image.name).put_records(image.records)
    except ZoldyQError as ex:
        # Something raced us between the room check and the puts: undo what we can.
        for qname in created:
            broker.delete(qname)
        raise SnapshotConflict(f"{ex} (queues it created were removed)") from ex
    return {
        "snapshot": name.removesuffix(SUFFIX),
        "queues": len(images),
        "messages": sum(len(i.records) for i in images),
    }


# -- on shutdown / on start ------------------------------------------------------------


def save_all(broker: Broker, settings: Settings) -> dict[str, Any] | None:
    """--snapshot-on-exit: every queue to ``<namespace>.zqsnap``; None if not asked."""
    if not (settings.snapshot_on_exit and settings.snapshot_dir):
        return None
    return save(broker, settings.snapshot_dir, default_name(settings))


def restore(broker: Broker, settings: Settings) -> dict[str, Any] | None:
    """--restore: load ``<namespace>.zqsnap`` if there is one; None if not asked or absent.

    After a successful load the file is renamed ``<namespace>.restored.zqsnap``,
    so a crash later (no exit snapshot) never replays messages twice.
    """
    if not (settings.restore and settings.snapshot_dir):
        return None
    name = default_name(settings)
    try:
        summary = load(broker, settings.snapshot_dir, name)
    except SnapshotNotFound:
        return None
    os.replace(
        path_for(settings.snapshot_dir, name),
        path_for(settings.snapshot_dir, f"{name}.restored"),
    )
    return summary


def on_start(broker: Broker, settings: Settings) -> None:
    """For the launcher, after creating the namespace: --restore, logged.

    A namespace that already holds queues (kept from a previous run) is not
    restored into: that would duplicate them. A bad snapshot file raises, so
    the server refuses to start rather than start empty.
    """
    if not settings.restore:
        return
    if broker.queues():
        log.warning("namespace '%s' already holds queues: snapshot not restored",
                    settings.namespace)
        return
    summary = restore(broker, settings)
    if summary is None:
        log.info("no snapshot '%s' to restore: starting empty", default_name(settings))
    else:
        log.info("restored %d messages in %d queues from snapshot '%s'",
                 summary["messages"], summary["queues"], summary["snapshot"])


def on_exit(settings: Settings) -> bool:
    """For the launcher, once the servers stopped: --snapshot-on-exit, logged.

    Returns False when the save failed: the caller must then keep the
    namespace, or the messages would be lost.
    """
    if not settings.snapshot_on_exit:
        return True
    try:
        with engine.attach(settings.namespace) as broker:
            summary = save_all(broker, settings)
    except (ZoldyQError, OSError) as ex:
        log.error("snapshot on exit failed: %s; namespace '%s' kept so nothing is lost",
                  ex, settings.namespace)
        return False
    assert summary is not None
    log.info("saved %d messages in %d queues to %s",
             summary["messages"], summary["queues"], summary["file"])
    return True
