"""posix_ipc at the boundary: create, open, map, reserve and unlink objects.

posix_ipc is imported here and nowhere else. Its errors leave this module as
``Gone`` (the object does not exist), ``FileExistsError`` (an exclusive create
found one), ``PermissionError`` (another user's object) or the ``Busy`` and
``Interrupted`` of a semaphore wait.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
from collections.abc import Iterator

import posix_ipc
from posix_ipc import Semaphore as Semaphore
from posix_ipc import SharedMemory as SharedMemory

from zoldyq.errors import StorageExhausted

SHM_DIR = "/dev/shm"
MODE = 0o600
Busy = posix_ipc.BusyError  # a semaphore wait timed out (raised by Semaphore.acquire)
Interrupted = posix_ipc.SignalError  # a signal cut a semaphore wait short


class Gone(Exception):
    """The named shared-memory object or semaphore does not exist (deleted, or not made yet)."""


@contextlib.contextmanager
def _translated(name: str) -> Iterator[None]:
    try:
        yield
    except posix_ipc.ExistentialError:
        raise Gone(name) from None
    except posix_ipc.PermissionsError:
        raise PermissionError(errno.EACCES, "not ours", name) from None


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


def create_shm(
    name: str, size: int, reserve_bytes: int, exclusive: bool = True
) -> SharedMemory:
    """Create ``name`` (mode 0600) of ``size`` bytes, backing the first ones.

    Exclusive: FileExistsError if it exists, and unlinked again if backing fails.
    Otherwise racing creators share one object (the kernel zero-fills it).
    """
    flags = posix_ipc.O_CREX if exclusive else posix_ipc.O_CREAT
    try:
        shm = posix_ipc.SharedMemory(name, flags, mode=MODE, size=size)
    except posix_ipc.ExistentialError:
        raise FileExistsError(errno.EEXIST, "exists", name) from None
    except posix_ipc.PermissionsError:
        raise PermissionError(errno.EACCES, "not ours", name) from None
    try:
        if reserve_bytes:
            reserve(shm.fd, 0, reserve_bytes)
    except BaseException:
        shm.close_fd()
        if exclusive:
            unlink_shm(name)
        raise
    return shm


def open_shm(name: str) -> SharedMemory:
    """Open an existing object; raises Gone if there is none."""
    with _translated(name):
        return posix_ipc.SharedMemory(name)


def map_shm(shm: SharedMemory, close: bool = True) -> mmap.mmap:
    """Map the whole object shared; closes its fd unless told to keep it."""
    m = mmap.mmap(shm.fd, shm.size)
    if close:
        shm.close_fd()
    return m


def create_sem(name: str, value: int) -> Semaphore:
    """Create semaphore ``name`` (mode 0600); FileExistsError if it exists."""
    try:
        return posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=MODE, initial_value=value)
    except posix_ipc.ExistentialError:
        raise FileExistsError(errno.EEXIST, "exists", name) from None


def open_sem(name: str) -> Semaphore:
    """Open an existing semaphore; raises Gone if there is none."""
    with _translated(name):
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
