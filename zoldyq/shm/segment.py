"""posix_ipc at the boundary: create, open, map, reserve and unlink objects.

posix_ipc errors become ZoldyQ errors here and nowhere else.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os

import posix_ipc

from zoldyq.errors import StorageExhausted

SHM_DIR = "/dev/shm"
MODE = 0o600
ExistentialError = posix_ipc.ExistentialError


def shm_free_bytes() -> int:
    """Bytes an unprivileged writer can still allocate in /dev/shm."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return 1 << 62  # not Linux-like: nothing to check against
    return st.f_bavail * st.f_frsize


def reserve(fd: int, offset: int, length: int) -> None:
    """Back ``length`` bytes at ``offset`` with real memory, or raise StorageExhausted.

    ftruncate reserves nothing on tmpfs: the first write to a page that does
    not fit kills the writer with SIGBUS. fallocate fails cleanly instead.
    """
    try:
        os.posix_fallocate(fd, offset, length)
    except OSError as ex:
        if ex.errno in (errno.ENOSPC, errno.EFBIG, errno.ENOMEM):
            raise StorageExhausted(length, shm_free_bytes()) from ex
        if ex.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise


def create_shm(name: str, size: int, reserve_bytes: int) -> posix_ipc.SharedMemory:
    """Create ``name`` (mode 0600, must not exist) of ``size`` bytes, backing the first ones."""
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=MODE, size=size)
    try:
        if reserve_bytes:
            reserve(shm.fd, 0, reserve_bytes)
    except BaseException:
        shm.close_fd()
        unlink_shm(name)
        raise
    return shm


def open_shm(name: str) -> posix_ipc.SharedMemory:
    """Open an existing object; raises posix_ipc.ExistentialError if there is none."""
    return posix_ipc.SharedMemory(name)


def map_shm(shm: posix_ipc.SharedMemory, close: bool = True) -> mmap.mmap:
    """Map the whole object shared; closes its fd unless told to keep it."""
    m = mmap.mmap(shm.fd, shm.size)
    if close:
        shm.close_fd()
    return m


def create_sem(name: str, value: int) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=MODE, initial_value=value)


def open_sem(name: str) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name)


def unlink_shm(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(name)


def unlink_sem(name: str) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_semaphore(name)


def leftovers(base: str) -> list[str]:
    """Entries in /dev/shm named ``base`` or ``base.*`` (semaphores show as sem.NAME)."""
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return []
    want = base.lstrip("/")
    found = []
    for entry in entries:
        name = entry[4:] if entry.startswith("sem.") else entry
        if name == want or name.startswith(want + "."):
            found.append(entry)
    return sorted(found)


def unlink_leftover(entry: str) -> None:
    """Unlink a /dev/shm entry found by ``leftovers``."""
    if entry.startswith("sem."):
        unlink_sem("/" + entry[4:])
    else:
        unlink_shm("/" + entry)
