"""A full /dev/shm is a clear StorageExhausted, never a SIGBUS; layout checks on attach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import zoldyq
from zoldyq.shm import names, segment
from zoldyq.shm.layout import R_VERSION

FILL_A_SMALL_SHM = textwrap.dedent("""
    import zoldyq
    b = zoldyq.create("tiny", max_bytes=3 << 20, max_message_bytes=64 << 10)
    a, bq = b.queue("a"), b.queue("b")
    chunk = b"x" * (60 << 10)
    a.put_bytes(chunk)
    bq.put_bytes(chunk)
    accepted = 0
    try:
        while True:
            a.put_bytes(chunk)
            bq.put_bytes(chunk)
            accepted += 2
    except zoldyq.StorageExhausted as ex:
        print("exhausted:", ex)
    except zoldyq.QueueFull:
        print("full before exhausted")
    print("a still works:", len(a.get_many(1000)) > 0, a.put_bytes(b"ok").queue_size == 1)
    print("b keeps messages:", len(bq) > 0)
    b.close()
    zoldyq.destroy("tiny")
""")


def can_mount_private_tmpfs() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def test_full_shm_is_a_clear_error_not_a_crash() -> None:
    """Filling two 3 MiB queues in a 6 MiB /dev/shm ends in StorageExhausted, not SIGBUS."""
    if not can_mount_private_tmpfs():
        if os.environ.get("CI"):
            pytest.fail("CI must be able to mount a private tmpfs (root + unshare) for this test")
        pytest.skip("needs root and unshare to mount a private small /dev/shm")
    script = (
        "mount -t tmpfs -o size=6m tmpfs /dev/shm && "
        f"exec {sys.executable} -c '{FILL_A_SMALL_SHM}'"
    )
    out = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).parent.parent)
    assert out.returncode == 0, out.stderr  # a SIGBUS would show as -7
    lines = out.stdout.splitlines()
    assert lines[0].startswith("exhausted: /dev/shm has "), out.stdout
    assert "bytes free" in lines[0]
    assert lines[1:] == ["a still works: True True", "b keeps messages: True"]


@pytest.mark.parametrize("version", [4, 99])  # 4: the 8-byte records before 5
def test_attach_refuses_another_layout_version(namespace: str, version: int) -> None:
    """A namespace written by another layout version is refused with both versions named."""
    zoldyq.create(namespace, max_bytes=1 << 20).close()
    shm = segment.open_shm(names.registry(namespace))
    mm = segment.map_shm(shm)
    words = memoryview(mm).cast("Q")
    words[R_VERSION] = version
    words.release()
    mm.close()
    with pytest.raises(zoldyq.LayoutMismatch,
                       match=rf"has layout version {version}, this ZoldyQ speaks version 5"):
        zoldyq.attach(namespace)


def test_attach_to_a_missing_namespace_says_so(namespace: str) -> None:
    """Attaching to a namespace nobody created names it and says to create it."""
    with pytest.raises(zoldyq.NamespaceNotFound) as info:
        zoldyq.attach(namespace)
    assert str(info.value) == (
        f"namespace '{namespace}' does not exist on this host (create it first)")
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.parametrize("bad", ["", "has.dot", "x" * 33, "sl/ash"])
def test_namespace_names_are_checked(bad: str) -> None:
    """Namespaces reach POSIX names, so only [A-Za-z0-9_-]{1,32} is allowed."""
    with pytest.raises(zoldyq.InvalidName, match="invalid namespace"):
        zoldyq.create(bad)


def test_create_is_idempotent_and_exclusive_on_request(namespace: str) -> None:
    """create() attaches to an existing namespace unless exist_ok=False."""
    first = zoldyq.create(namespace, max_queues=3, max_bytes=1 << 20)
    second = zoldyq.create(namespace, max_queues=50)
    assert second.max_queues == 3  # the creator's settings win
    with pytest.raises(zoldyq.ConfigError, match="already exists"):
        zoldyq.create(namespace, exist_ok=False)
    first.close()
    second.close()


def test_a_new_queue_reserves_its_header_and_its_ring_on_first_put(namespace: str) -> None:
    """As the README says: a new queue takes its header only; the first put backs 1 MiB."""
    b = zoldyq.create(namespace, max_bytes=8 << 20)
    try:
        b.create_queue("r")
        q = b.queue("r")
        assert q.stats()["reserved_bytes"] == 0
        q.put(1)
        assert q.stats()["reserved_bytes"] == 1 << 20
    finally:
        b.close()
