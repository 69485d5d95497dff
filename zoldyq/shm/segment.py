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
import pwd
from collections.abc import Iterator

import posix_ipc
from posix_ipc import Semaphore as Semaphore
from posix_ipc import SharedMemory as SharedMemory

from zoldyq.errors import AccessDenied, StorageExhausted

SHM_DIR = "/dev/shm"
MODE = 0o600
Busy = posix_ipc.BusyError  # a semaphore wait timed out (raised by Semaphore.acquire)
Interrupted = posix_ipc.SignalError  # a signal cut a semaphore wait short
Closed = posix_ipc.ExistentialError  # an operation on a semaphore this process closed


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
    if not exclusive:
        _checked(name, shm)  # it may be someone else's, made before us
    try:
        if reserve_bytes:
            reserve(shm.fd, 0, reserve_bytes)
    except BaseException:
        shm.close_fd()
        if exclusive:
            unlink_shm(name)
        raise
    return shm


def check_private(name: str, path: str, st: os.stat_result) -> None:
    """Refuse an object that is not ours alone: another user could read every message,
    forge some or truncate a ring under us (SIGBUS). Raises AccessDenied."""
    if st.st_uid == os.geteuid() and not st.st_mode & 0o077:
        return
    try:
        owner = f"{pwd.getpwuid(st.st_uid).pw_name} (uid {st.st_uid})"
    except KeyError:
        owner = f"uid {st.st_uid}"
    ns = name.lstrip("/").split(".")[1] if name.count(".") else name
    raise AccessDenied(ns, path, owner, st.st_mode & 0o7777)


def _checked(name: str, shm: SharedMemory) -> SharedMemory:
    try:
        check_private(name, f"{SHM_DIR}/{name.lstrip('/')}", os.fstat(shm.fd))
    except BaseException:
        shm.close_fd()
        raise
    return shm


def open_shm(name: str) -> SharedMemory:
    """Open an existing object of ours (``check_private``).

    Raises Gone if there is none, AccessDenied if it is not private to this user.
    """
    with _translated(name):
        shm = posix_ipc.SharedMemory(name)
    return _checked(name, shm)


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
    """Open an existing semaphore of ours; Gone if there is none, AccessDenied if it is
    not private.

    posix_ipc gives no descriptor to fstat: glibc keeps a semaphore as
    ``/dev/shm/sem.NAME``, so that file is checked by path, right after the open.
    """
    with _translated(name):
        sem = posix_ipc.Semaphore(name)
    path = f"{SHM_DIR}/sem.{name.lstrip('/')}"
    try:
        check_private(name, path, os.stat(path))
    except FileNotFoundError:
        pass  # not glibc's layout: nothing to check against
    except BaseException:
        sem.close()
        raise
    return sem


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
