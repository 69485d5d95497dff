"""Hostile neighbours and hostile bytes: other users cannot attach, garbage never decodes."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zoldyq
from tests.helpers.rings import bare_ring
from zoldyq.shm import segment
from zoldyq.shm.layout import KIND_BYTES, KIND_JSON, W_HEAD, W_TAIL
from zoldyq.shm.ring import RingCorrupt, RingFull

NOBODY = 65534


def test_another_user_cannot_attach(namespace: str) -> None:
    """A process of another Unix user is refused with AccessDenied (objects are 0600)."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root so that this test can switch users")
        pytest.skip("needs root to switch to another user")
    zoldyq.create(namespace, max_bytes=1 << 20).close()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            try:
                zoldyq.attach(namespace)
                result = "attached"
            except zoldyq.AccessDenied as ex:
                result = f"denied: {ex}"
            os.write(write_fd, result.encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    result = os.read(read_fd, 1000).decode()
    os.close(read_fd)
    os.close(write_fd)
    assert result == (
        f"denied: namespace '{namespace}' belongs to another user (its objects are mode 0600): "
        "run as the user who created it"
    )


def _need_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("CI runs as root so that this test can chown and switch users")
        pytest.skip("needs root to chown objects and switch users")


def _objects(namespace: str) -> list[str]:
    return [f"/dev/shm/{e}" for e in segment.leftovers(f"/zoldyq.{namespace}")]


def _attach_and_put(namespace: str) -> None:
    with zoldyq.attach(namespace) as b:
        b.queue("q").put(2)


@pytest.mark.parametrize("change", ["chown", "chmod"])
@pytest.mark.parametrize("which", ["zoldyq.{ns}", "zoldyq.{ns}.q0.1",
                                   "sem.zoldyq.{ns}.q0.1.bell"])
def test_an_object_not_ours_alone_is_refused(namespace: str, which: str, change: str) -> None:
    """Any namespace object owned by another uid, or with group/other permission bits, is
    refused on attach with AccessDenied naming the object and its owner."""
    _need_root()
    with zoldyq.create(namespace, max_bytes=1 << 20) as created:
        created.queue("q").put(1)
    path = "/dev/shm/" + which.format(ns=namespace)
    if change == "chown":
        os.chown(path, NOBODY, NOBODY)
        owner, mode = f"nobody (uid {NOBODY})", 0o600
    else:
        os.chmod(path, 0o640)
        owner, mode = "root (uid 0)", 0o640
    with pytest.raises(zoldyq.AccessDenied) as info:
        _attach_and_put(namespace)
    assert str(info.value) == (
        f"namespace '{namespace}' is not safe to use: {path} is owned by {owner} with mode "
        f"{mode:04o} (ZoldyQ needs its own user and mode 0600): remove the namespace's "
        "objects or run as their owner")
    assert info.value.http_status == 503


def test_a_namespace_planted_by_another_user_is_refused(namespace: str) -> None:
    """A namespace another user created first (with ZoldyQ's own code, then chmod 0666) is
    refused by create() and attach(): the server never serves through objects others
    can read, forge or truncate."""
    _need_root()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            zoldyq.create(namespace, max_bytes=1 << 20).queue("q").put("forged")
            for path in _objects(namespace):
                os.chmod(path, 0o666)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(_objects(namespace)) == 3
    for attempt in (zoldyq.create, zoldyq.attach):
        with pytest.raises(zoldyq.AccessDenied, match=r"is owned by nobody \(uid 65534\) "
                                                       r"with mode 0666"):
            attempt(namespace).close()


SIZE, MAX = 512, 64


@given(
    data=st.binary(min_size=SIZE, max_size=SIZE),
    head=st.integers(0, 2**64 - 1),
    tail=st.integers(0, 2**64 - 1),
    max_n=st.integers(1, 100),
)
def test_garbage_in_the_ring_never_decodes(data: bytes, head: int, tail: int,
                                           max_n: int) -> None:
    """Random ring bytes and words give well-formed records or RingCorrupt, nothing else."""
    ring = bare_ring(SIZE, MAX, SIZE // 2 - 16)[1]
    ring.data[:] = data
    ring.words[W_HEAD], ring.words[W_TAIL] = head, tail
    try:
        records, _, nbytes = ring.read(max_n)
    except RingCorrupt:
        return
    assert len(records) <= max_n
    assert all(kind in (KIND_JSON, KIND_BYTES) for kind, *_ in records)
    assert nbytes == sum(len(payload) for _, payload, *_ in records) <= SIZE


@given(st.lists(st.binary(max_size=120), min_size=1, max_size=8), st.integers(0, SIZE))
def test_truncated_or_flipped_records_are_refused(payloads: list[bytes], flip: int) -> None:
    """Flipping any byte of valid records yields the originals, other valid records,
    or RingCorrupt; never an exception of another kind."""
    ring = bare_ring(SIZE, MAX, SIZE // 2 - 16)[1]
    try:
        ring.words[W_TAIL] = ring.write([(KIND_BYTES, p) for p in payloads], 1)
    except RingFull:
        return  # a batch too big for the ring is not the point here
    if flip < SIZE:
        ring.data[flip] ^= 0xFF
    try:
        records, _, _ = ring.read(len(payloads))
    except RingCorrupt:
        return
    assert len(records) == len(payloads)
