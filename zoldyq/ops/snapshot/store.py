"""Snapshots saved from and loaded into any ``api.Broker``: files, room checks, start and exit.

Files live only in the configured snapshot directory: a snapshot is named,
never given as a path, and the name is checked (``[A-Za-z0-9_-]`` first,
then ``[A-Za-z0-9_.-]``, 64 characters at most) and resolved inside that
directory, symlinks included. A save writes a temporary file beside the
target, fsyncs it and renames it over the target: readers see the old file
or the new one, never half of one.

A load decodes the whole file and checks that every queue has room, all
before it writes anything; each queue is then filled with one all-or-none
put. Loaded messages are appended after any already queued and get a new
``enqueued_at`` (the engine stamps puts); the saved one stays in the file. A
save peeks each queue without removing anything, so it is a consistent cut
of that queue.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

from zoldyq import broker as engine
from zoldyq.api import Broker, Caps, check_queue_name
from zoldyq.errors import (
    BadSnapshotName,
    QueueNotFound,
    SnapshotConflict,
    SnapshotError,
    SnapshotNotFound,
    SnapshotsDisabled,
    ZoldyQError,
)
from zoldyq.ops.snapshot.format import HEADER, QueueImage, decode, encode
from zoldyq.settings import Settings

SUFFIX = ".zqsnap"
log = logging.getLogger("zoldyq.ops.snapshot")
_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,63}")


def path_for(directory: str | os.PathLike[str] | None, name: str) -> Path:
    """The file of snapshot ``name`` inside ``directory``; nothing else is ever returned.

    Raises:
        SnapshotsDisabled: no directory is configured.
        BadSnapshotName: ``name`` is not a plain snapshot name.
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


def clean_partial(directory: str | os.PathLike[str], name: str = "") -> int:
    """Remove temporary files of saves that were killed (of snapshot file ``name``,
    or all); returns how many. A save holds an flock on its file while it writes,
    so a file nobody holds is a dead save's, and a live save's is never touched."""
    removed = 0
    prefix = f".{name}." if name else "."
    try:
        entries = os.listdir(directory)
    except OSError:
        return 0
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp") and SUFFIX in entry):
            continue
        tmp = Path(directory, entry)
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink(missing_ok=True)
            removed += 1
        except BlockingIOError:
            pass  # a save is writing it
        finally:
            os.close(fd)
    return removed


def default_name(settings: Settings) -> str:
    """What --snapshot-on-exit writes and --restore reads: the namespace's name."""
    return settings.namespace


# -- save --------------------------------------------------------------------------


def _image(broker: Broker, name: str) -> QueueImage:
    """Every message of ``name`` without removing any."""
    caps = {e.name: e.caps for e in broker.entries()}.get(check_queue_name(name))
    if caps is None:
        raise QueueNotFound(name)
    q = broker.queue(name)
    messages = q.peek()
    image = QueueImage(name, Caps(*caps), [(m.kind, m.data) for m in messages],
                       [m.enqueued_at for m in messages])  # fmt: skip
    held = getattr(q, "held", None)  # leased and delayed messages, where the engine has them
    if held is not None:
        kept = held()
        if kept:
            image.extras = [(0, 0)] * len(image.records)
            for kind, data, enqueued_at, deliveries, deliver_at in kept:
                image.records.append((kind, data))
                image.stamps.append(enqueued_at)
                image.extras.append((max(1, deliveries) if not deliver_at else deliveries,
                                     deliver_at or 0))
    return image


class _Returned(NamedTuple):
    """A message to put back at the head with its delivery count (``Queue.requeue``)."""

    kind: int
    data: bytes
    enqueued_at: int
    delivery_count: int


def _restore(q: Any, image: QueueImage) -> None:
    """Ready messages in order, leased ones back at the head with their count, delayed
    ones until their deliver_at."""
    if not image.extras:
        q.put_records(image.records)
        return
    rows = list(zip(image.records, image.stamps, image.extras, strict=True))
    plain = [rec for rec, _, (d, at) in rows if not d and not at]
    if plain:
        q.put_records(plain)
    back = [_Returned(k, data, stamp, d + 1) for (k, data), stamp, (d, at) in rows
            if d and not at]
    if back:
        q.requeue(back)
    for rec, _, (_, at) in rows:
        if at:
            q.put_records([rec], deliver_at=at)


def save(
    broker: Broker, directory: str | os.PathLike[str] | None, name: str, queue: str | None = None
) -> dict[str, Any]:
    """Write every queue (or ``queue``) to snapshot ``name``; returns a summary."""
    path = path_for(directory, name)
    wanted = [queue] if queue is not None else broker.queues()
    images = []
    for qname in wanted:
        try:
            images.append(_image(broker, qname))
        except QueueNotFound:
            if queue is not None:
                raise  # asked for by name; in "all" it was deleted while we looked
    data = encode(images, time.time_ns() // 1000)
    clean_partial(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # "being written": clean_partial leaves it alone
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
        "bytes": len(data),
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
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, memoryview(mm) as view:
            return decode(view, name)  # the view is released before the map closes


def _room(broker: Broker, images: list[QueueImage]) -> None:
    """Raise SnapshotConflict unless every image fits now (checked before any write)."""
    new = {i.name for i in images if not broker.exists(i.name)}
    free_slots = broker.max_queues - len(broker.queues())
    if len(new) > free_slots:
        raise SnapshotConflict(f"{len(new)} queues to create, room for {free_slots} (max_queues)")
    for image in images:
        sizes = [len(d) for _, d in image.records]
        if image.name in new:
            caps, size, used = image.caps, 0, 0
        else:
            s = broker.queue(image.name).stats()
            caps = Caps(s["capacity"], s["max_bytes"], s["max_message_bytes"])
            size, used = s["size"], s["bytes"]
        biggest = max(sizes, default=0)
        if biggest > caps.max_message_bytes:
            raise SnapshotConflict(
                f"queue '{image.name}' takes messages up to {caps.max_message_bytes} bytes, "
                f"the snapshot holds one of {biggest}"
            )
        if size + len(sizes) > caps.max_messages:
            raise SnapshotConflict(
                f"queue '{image.name}' has room for {caps.max_messages - size} more "
                f"messages, the snapshot holds {len(sizes)}"
            )
        need = broker.bytes_needed(sizes, appended=image.name not in new)
        if used + need > caps.max_bytes:
            raise SnapshotConflict(
                f"queue '{image.name}' has {caps.max_bytes - used} bytes free, "
                f"the snapshot needs {need}"
            )


def load(
    broker: Broker, directory: str | os.PathLike[str] | None, name: str, queue: str | None = None
) -> dict[str, Any]:
    """Load snapshot ``name`` (every queue, or ``queue``) into the namespace; a summary."""
    images = read(directory, name)
    if queue is not None:
        images = [i for i in images if i.name == check_queue_name(queue)]
        if not images:
            raise SnapshotError(name, f"it holds no queue '{queue}'")
    _room(broker, images)
    created: list[str] = []
    try:
        for image in images:
            if not broker.exists(image.name):
                mm, mb, mmb = image.caps
                broker.create_queue(image.name, max_messages=mm, max_bytes=mb,
                                    max_message_bytes=mmb)  # fmt: skip
                created.append(image.name)
            if image.records:
                _restore(broker.queue(image.name), image)
    except ZoldyQError as ex:
        # Caps the engine refuses, or something raced us between the room check and
        # the puts: undo what we can.
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
    if settings.snapshot_dir and (n := clean_partial(settings.snapshot_dir)):
        log.warning("removed %d partial snapshot file(s) of saves that were killed", n)
    if not settings.restore:
        return
    if broker.queues():
        log.warning("namespace '%s' already holds queues: snapshot not restored",
                    settings.namespace)  # fmt: skip
        return
    summary = restore(broker, settings)
    if summary is None:
        log.info("no snapshot '%s' to restore: starting empty", default_name(settings))
    else:
        log.info("restored %d messages in %d queues from snapshot '%s'",
                 summary["messages"], summary["queues"], summary["snapshot"])  # fmt: skip


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
                  ex, settings.namespace)  # fmt: skip
        return False
    assert summary is not None
    log.info("saved %d messages in %d queues to %s",
             summary["messages"], summary["queues"], summary["file"])  # fmt: skip
    return True
