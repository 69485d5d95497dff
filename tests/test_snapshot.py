"""Snapshots: round trips, refusals (corrupt, truncated, other version, paths), atomicity."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

import zoldyq
from zoldyq.errors import (
    BadSnapshotName,
    SnapshotConflict,
    SnapshotError,
    SnapshotNotFound,
    SnapshotsDisabled,
)
from zoldyq.ops import snapshot
from zoldyq.ops.snapshot.format import HEADER
from zoldyq.settings import Settings


@pytest.fixture
def snapdir(tmp_path: Path) -> Path:
    d = tmp_path / "snaps"
    d.mkdir()
    return d


def fill(broker: zoldyq.Broker) -> None:
    q = broker.queue("jobs")
    for i in range(5):
        q.put({"i": i, "text": "é"})
    broker.queue("blobs").put_bytes(b"\x00\xff raw")
    broker.queue("blobs").put("json too")
    broker.create_queue("small", max_messages=7, max_bytes=4096, max_message_bytes=512)
    broker.queue("small").put([1, 2, 3])


def contents(broker: zoldyq.Broker) -> dict[str, list[tuple[bool, object]]]:
    """Every queue's messages (drained), for comparing namespaces."""
    return {
        name: [(m.is_raw, m.payload) for m in broker.queue(name).get_many(10_000)]
        for name in broker.queues()
    }


def rewrite(path: Path, mutate, fix_checksum: bool = True) -> None:  # type: ignore[no-untyped-def]
    """Apply ``mutate`` to the file's bytes, recomputing the checksum so only the change counts."""
    data = bytearray(path.read_bytes())
    mutate(data)
    if fix_checksum:
        data[32:64] = hashlib.sha256(bytes(data[:32]) + bytes(data[HEADER.size :])).digest()
    path.write_bytes(bytes(data))


def test_every_queue_round_trips_with_its_caps(broker: zoldyq.Broker, snapdir: Path) -> None:
    """Every queue comes back in order, JSON as JSON and raw as bytes, with its own caps."""
    fill(broker)
    summary = snapshot.save(broker, snapdir, "all")
    assert summary["queues"] == 3
    assert summary["messages"] == 8
    assert summary["file"] == str(snapdir / "all.zqsnap")
    want = contents(broker)
    for name in broker.queues():
        broker.delete(name)
    assert snapshot.load(broker, snapdir, "all") == {"snapshot": "all", "queues": 3, "messages": 8}
    small = {e.name: e.caps for e in broker.entries()}["small"]
    assert (small.max_messages, small.max_bytes, small.max_message_bytes) == (7, 4096, 512)
    assert contents(broker) == want
    assert want["blobs"] == [(True, b"\x00\xff raw"), (False, "json too")]


def test_save_takes_nothing_and_keeps_enqueue_times(broker: zoldyq.Broker, snapdir: Path) -> None:
    """Saving leaves every message in place; the file keeps each one's enqueued_at."""
    fill(broker)
    snapshot.save(broker, snapdir, "s")
    assert len(broker.queue("jobs")) == 5
    images = {i.name: i for i in snapshot.read(snapdir, "s")}
    taken = broker.queue("jobs").get_many(10)
    assert images["jobs"].stamps == [m.enqueued_at for m in taken]


def test_one_queue_saves_and_loads_alone(broker: zoldyq.Broker, snapdir: Path) -> None:
    """--queue saves and loads only that queue."""
    fill(broker)
    assert snapshot.save(broker, snapdir, "one", queue="blobs")["queues"] == 1
    snapshot.save(broker, snapdir, "all")
    for name in broker.queues():
        broker.delete(name)
    snapshot.load(broker, snapdir, "all", queue="small")
    assert broker.queues() == ["small"]
    snapshot.load(broker, snapdir, "one")
    assert broker.queues() == ["blobs", "small"]
    with pytest.raises(SnapshotError, match=r"it holds no queue 'jobs'$"):
        snapshot.load(broker, snapdir, "one", queue="jobs")
    with pytest.raises(zoldyq.QueueNotFound):
        snapshot.save(broker, snapdir, "one", queue="nope")


def test_load_appends_to_existing_queue(broker: zoldyq.Broker, snapdir: Path) -> None:
    """Loaded messages go after the ones already queued."""
    broker.queue("q").put("saved")
    snapshot.save(broker, snapdir, "s")
    broker.queue("q").get()
    broker.queue("q").put("live")
    snapshot.load(broker, snapdir, "s")
    assert [m.payload for m in broker.queue("q").get_many(10)] == ["live", "saved"]


def test_an_empty_namespace_round_trips_as_nothing(broker: zoldyq.Broker, snapdir: Path) -> None:
    """An empty namespace saves and loads as nothing."""
    assert snapshot.save(broker, snapdir, "empty")["queues"] == 0
    assert snapshot.load(broker, snapdir, "empty")["messages"] == 0


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda d: d.__setitem__(slice(0, 8), b"NOTASNAP"), r"not a ZoldyQ snapshot \(bad magic\)"),
        (lambda d: d.__setitem__(slice(8, 12), (3).to_bytes(4, "little")),
         r"format version 3, this ZoldyQ reads 1 and 2"),
        (lambda d: d.__setitem__(slice(12, 16), (9).to_bytes(4, "little")),
         r"section runs past the end at byte \d+"),
        (lambda d: d.extend(b"\0" * 8), r"truncated or padded: \d+ bytes, expected \d+"),
    ],
    ids=["magic", "version", "queue-count", "padded"],
)  # fmt: skip
def test_refuses_bad_header(broker: zoldyq.Broker, snapdir: Path, mutate, problem) -> None:  # type: ignore[no-untyped-def]
    """A file with a wrong magic, version, count or length is refused and nothing is loaded."""
    fill(broker)
    snapshot.save(broker, snapdir, "s")
    rewrite(snapdir / "s.zqsnap", mutate, fix_checksum=True)
    for name in broker.queues():
        broker.delete(name)
    with pytest.raises(SnapshotError, match=rf"^snapshot 's' was not loaded: {problem}$"):
        snapshot.load(broker, snapdir, "s")
    assert broker.queues() == []


def test_refuses_truncated_at_every_length(broker: zoldyq.Broker, snapdir: Path) -> None:
    """Cut anywhere, the file is refused and no queue is created."""
    fill(broker)
    snapshot.save(broker, snapdir, "s")
    data = (snapdir / "s.zqsnap").read_bytes()
    for name in broker.queues():
        broker.delete(name)
    for cut in range(len(data)):
        (snapdir / "t.zqsnap").write_bytes(data[:cut])
        with pytest.raises(SnapshotError, match=r"truncated"):
            snapshot.load(broker, snapdir, "t")
    assert broker.queues() == []


def test_refuses_any_flipped_bit(broker: zoldyq.Broker, snapdir: Path) -> None:
    """A flipped byte anywhere in the body or header fails the checksum (or an earlier check)."""
    fill(broker)
    snapshot.save(broker, snapdir, "s")
    data = (snapdir / "s.zqsnap").read_bytes()
    for name in broker.queues():
        broker.delete(name)
    for pos in range(0, len(data), 3):
        bad = bytearray(data)
        bad[pos] ^= 0x40
        (snapdir / "c.zqsnap").write_bytes(bytes(bad))
        with pytest.raises(SnapshotError):
            snapshot.load(broker, snapdir, "c")
    assert broker.queues() == []


def test_refuses_well_checksummed_garbage(broker: zoldyq.Broker, snapdir: Path) -> None:
    """A crafted file with a valid checksum is still parsed strictly: bad JSON, kinds, names."""
    broker.queue("q").put({"ok": True})
    snapshot.save(broker, snapdir, "s")
    path = snapdir / "s.zqsnap"
    good = path.read_bytes()
    json_at = good.index(b'{"ok":true}')

    def bad_json(d: bytearray) -> None:
        d[json_at] = ord("X")

    def bad_kind(d: bytearray) -> None:
        d[json_at - 12 : json_at - 8] = (7).to_bytes(4, "little")

    def bad_name(d: bytearray) -> None:
        d[HEADER.size + 2] = ord("/")

    for mutate, problem in (
        (bad_json, "queue 'q': a record is not JSON"),
        (bad_kind, "queue 'q': unknown record kind 7"),
        (bad_name, "bad queue name '/'"),
    ):
        path.write_bytes(good)
        rewrite(path, mutate)
        with pytest.raises(SnapshotError, match=rf"^snapshot 's' was not loaded: {problem}$"):
            snapshot.load(broker, snapdir, "s")
    assert [m.payload for m in broker.queue("q").get_many(10)] == [{"ok": True}]


@pytest.mark.parametrize(
    "name",
    ["../x", "../../etc/passwd", "/etc/passwd", "a/b", "..", ".", ".hidden", "", "x" * 65,
     "a\0b", "a b", "~root", "a\\b"],
)  # fmt: skip
def test_names_never_leave_the_directory(broker: zoldyq.Broker, snapdir: Path, name: str) -> None:
    """Anything but a plain name is refused before a file is touched."""
    with pytest.raises(BadSnapshotName, match=r"^invalid snapshot name .*a name, not a path\)$"):
        snapshot.save(broker, snapdir, name)
    with pytest.raises(BadSnapshotName):
        snapshot.load(broker, snapdir, name)
    assert list(snapdir.iterdir()) == []


def test_symlink_out_of_the_directory_is_refused(
    broker: zoldyq.Broker, snapdir: Path, tmp_path: Path
) -> None:
    """A symlink planted in the snapshot directory does not lead a save or load outside."""
    outside = tmp_path / "outside.zqsnap"
    outside.write_bytes(b"precious")
    (snapdir / "evil.zqsnap").symlink_to(outside)
    with pytest.raises(BadSnapshotName):
        snapshot.save(broker, snapdir, "evil")
    with pytest.raises(BadSnapshotName):
        snapshot.load(broker, snapdir, "evil")
    assert outside.read_bytes() == b"precious"


def test_save_is_atomic(broker: zoldyq.Broker, snapdir: Path) -> None:
    """A save replaces the file whole and leaves no temporary file; a failed one changes nothing."""
    broker.queue("q").put(1)
    snapshot.save(broker, snapdir, "s")
    first = (snapdir / "s.zqsnap").read_bytes()
    with pytest.raises(zoldyq.QueueNotFound):
        snapshot.save(broker, snapdir, "s", queue="missing")
    assert (snapdir / "s.zqsnap").read_bytes() == first
    broker.queue("q").put(2)
    snapshot.save(broker, snapdir, "s")
    assert os.listdir(snapdir) == ["s.zqsnap"]
    assert oct((snapdir / "s.zqsnap").stat().st_mode & 0o777) == "0o600"
    assert snapshot.read(snapdir, "s")[0].records == [(1, b"1"), (1, b"2")]


def test_load_that_does_not_fit_changes_nothing(broker: zoldyq.Broker, snapdir: Path) -> None:
    """If one queue lacks room, the load is refused before any queue is created or filled."""
    src = broker.queue("a")
    src.put_many(range(5))
    broker.queue("b").put_many(range(5))
    snapshot.save(broker, snapdir, "s")
    broker.delete("a")
    broker.delete("b")
    broker.create_queue("b", max_messages=6)
    broker.queue("b").put_many(["already", "there"])
    with pytest.raises(SnapshotConflict, match=r"queue 'b' has room for 4 more messages, the "
                                               r"snapshot holds 5$") as info:
        snapshot.load(broker, snapdir, "s")
    assert info.value.http_status == 409
    assert broker.queues() == ["b"]
    assert len(broker.queue("b")) == 2


def test_missing_file_or_directory_is_a_clear_error(broker: zoldyq.Broker, snapdir: Path) -> None:
    """A missing file and an unset snapshot_dir are clear errors."""
    with pytest.raises(SnapshotNotFound, match=r"^snapshot 'nope' does not exist$"):
        snapshot.load(broker, snapdir, "nope")
    with pytest.raises(SnapshotsDisabled, match=r"^snapshots are disabled: set snapshot_dir"):
        snapshot.save(broker, None, "s")


def test_restore_brings_the_exit_snapshot_back_once(broker: zoldyq.Broker, snapdir: Path) -> None:
    """save_all then restore brings the queues back once; the used file is set aside."""
    base = {"ZOLDYQ_NAMESPACE": broker.namespace, "ZOLDYQ_CONFIG": "/nonexistent.toml"}
    off = Settings.load(env=base)
    assert snapshot.save_all(broker, off) is None
    assert snapshot.restore(broker, off) is None
    on = Settings.load(
        env={
            **base,
            "ZOLDYQ_SNAPSHOT_DIR": str(snapdir),
            "ZOLDYQ_SNAPSHOT_ON_EXIT": "true",
            "ZOLDYQ_RESTORE": "true",
        }
    )
    assert snapshot.restore(broker, on) is None  # nothing saved yet: start empty
    fill(broker)
    assert snapshot.save_all(broker, on)["messages"] == 8
    want = contents(broker)
    for name in broker.queues():
        broker.delete(name)
    assert snapshot.restore(broker, on)["messages"] == 8
    assert contents(broker) == want
    assert sorted(os.listdir(snapdir)) == [f"{broker.namespace}.restored.zqsnap"]
    assert snapshot.restore(broker, on) is None  # a second start does not replay it


def test_planned_restart_loses_nothing(namespace: str, snapdir: Path) -> None:
    """``zoldyq serve --snapshot-on-exit --restore``: SIGTERM saves, the next start restores."""
    from tests.helpers import servers

    flags = ("--snapshot-on-exit", "--restore")
    with servers.serve(namespace, *flags, ws=False, snapshot_dir=snapdir) as srv:
        for i in range(3):
            assert srv.call("POST", "/queues/jobs/enqueue", json={"payload": i}).status == 200
        assert srv.call("POST", "/queues/raw/enqueue", body=b"\x00\x01",
                        headers={"Content-Type": "application/octet-stream"}).status == 200
        assert srv.stop() == 0
    assert os.listdir(snapdir) == [f"{namespace}.zqsnap"]
    with pytest.raises(zoldyq.NamespaceNotFound):
        zoldyq.attach(namespace)
    with servers.serve(namespace, *flags, ws=False, snapshot_dir=snapdir) as srv:
        got = [srv.call("GET", "/queues/jobs/dequeue").json()["payload"] for _ in range(3)]
        assert got == [0, 1, 2]
        assert srv.call("GET", "/queues/raw/dequeue").body == b"\x00\x01"
        assert sorted(os.listdir(snapdir)) == [f"{namespace}.restored.zqsnap"]
        assert srv.stop() == 0
    assert sorted(os.listdir(snapdir)) == [f"{namespace}.restored.zqsnap", f"{namespace}.zqsnap"]


def test_serve_refuses_a_corrupt_snapshot(namespace: str, snapdir: Path) -> None:
    """--restore with a corrupt file: the server does not start, says why, leaves no namespace."""
    import subprocess
    import sys

    from tests.helpers import servers

    (snapdir / f"{namespace}.zqsnap").write_bytes(b"ZQSNAP\0\0" + b"\0" * 100)
    env = servers.settings_env(namespace, port=servers.free_port(), ws=False,
                               snapshot_dir=snapdir)  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "zoldyq.cli", "serve", "--restore"], env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == (
        f"zoldyq: snapshot '{namespace}' was not loaded: format version 0, "
        "this ZoldyQ reads 1 and 2\n"
    )
    with pytest.raises(zoldyq.NamespaceNotFound):
        zoldyq.attach(namespace)


def test_leased_and_delayed_messages_survive_a_snapshot(broker: zoldyq.Broker,
                                                        snapdir: Path) -> None:
    """A snapshot keeps leased and delayed messages: a leased one comes back ready, at the
    head, its delivery count kept; a delayed one stays hidden until its deliver_at."""
    q = broker.queue("jobs")
    q.put_many(["leased", "ready"])
    m = q.get(lease=30)
    assert m is not None
    at = time.time_ns() // 1000 + 400_000
    q.put("later", deliver_at=at)
    snapshot.save(broker, snapdir, "held")
    broker.delete("jobs")
    assert snapshot.load(broker, snapdir, "held")["messages"] == 3
    q = broker.queue("jobs")
    stats = q.stats()
    assert (stats["size"], stats["inflight"], stats["delayed"]) == (2, 0, 1)
    got = q.get_many(10)
    assert [x.payload for x in got] == ["leased", "ready"]
    assert got[0].delivery_count == 2  # delivered once before the snapshot
    later = q.get(timeout=3)
    assert later is not None
    assert later.payload == "later"
    assert time.time_ns() // 1000 >= at
