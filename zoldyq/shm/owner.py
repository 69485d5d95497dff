"""Who serves a namespace, tracked by the kernel: an flock held for the server's life.

The owner file ``/dev/shm/zoldyq.<ns>.own`` (mode 0600) holds the owner's pid.
A server takes an exclusive, non-blocking flock on it before it creates or
attaches to the namespace and keeps it until it exits; the kernel drops it
when the server dies, however it dies. So:

- a second server on the same namespace finds the flock taken and is refused,
  with the first one's pid (two servers would each destroy the other's queues
  when they stop);
- a file that is there but not locked was left by a server that died: the new
  one adopts the namespace (and destroys it at exit, as the dead one would have);
- a namespace with no owner file was made by someone else (a local process):
  a server serves it but never destroys it;
- ``zoldyq destroy`` asks ``holder()`` and refuses while a live server holds it.

The file is unlinked with the namespace (it shares its name prefix), so a
claimer that locked a file unlinked under it checks the inode and retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os

from zoldyq.errors import NamespaceBusy
from zoldyq.shm import names, segment


def path(ns: str) -> str:
    return f"{segment.SHM_DIR}/{names.PREFIX}.{names.check_namespace(ns)}.own"


class Ownership:
    """This process's claim on namespace ``ns``; raises NamespaceBusy if it is served."""

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self.path = path(ns)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            try:
                st = os.fstat(fd)
                segment.check_private(f"/{names.PREFIX}.{ns}.own", self.path, st)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise NamespaceBusy(ns, _read_pid(fd)) from None
                if os.stat(self.path).st_ino != st.st_ino:
                    os.close(fd)  # unlinked (destroyed) between open and flock: again
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            break
        self._fd = fd
        #: a dead server's claim taken over (its file was there, unlocked)
        self.adopted = _read_pid(fd) is not None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)

    def release(self, unlink: bool) -> None:
        """Give the claim up; ``unlink`` when the namespace is gone (or never was)."""
        if self._fd < 0:
            return
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                    os.unlink(self.path)
        os.close(self._fd)
        self._fd = -1


def holder(ns: str) -> int | None:
    """The pid of the live server holding ``ns``, or None."""
    try:
        fd = os.open(path(ns), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd) or -1
        return None
    finally:
        os.close(fd)


def _read_pid(fd: int) -> int | None:
    raw = os.pread(fd, 32, 0).strip()
    return int(raw) if raw.isdigit() else None
