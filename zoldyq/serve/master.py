"""gunicorn's Arbiter as ``zoldyq serve``'s own loop: the launcher is the gunicorn master.

A master forked from the launcher held private copies of the launcher's pages (CPython's
refcounts rewrite them) for a process that only supervised: 3.1 MB anonymous of an idle
server's 47.4 (``scripts/footprint``). So the launcher runs the arbiter itself, and its
other jobs ride the arbiter's loop, which turns at least once a second and at once on a
signal or a child's death (SIGCHLD): the WebSocket sidecar (its forked child, forked once
the workers are, restarted with a growing delay when it dies, stopped and reloaded with
the workers) and the check that the namespace was not destroyed under us.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from gunicorn.arbiter import Arbiter

from zoldyq.serve.children import Child, leave

log = logging.getLogger("zoldyq.serve.launcher")


class Master(Arbiter):
    """The arbiter, also supervising ``children`` (the sidecar) and watching ``destroyed``."""

    children: tuple[Child, ...] = ()
    namespace = ""
    destroyed: Callable[[], bool] = staticmethod(lambda: False)
    #: 1: the sidecar kept dying at once, or the namespace was destroyed under us
    status = 0
    gone = False  # the namespace was destroyed under us

    def spawn_worker(self) -> Any:
        """A worker returns from gunicorn's code by raising SystemExit, inside our frames."""
        try:
            return super().spawn_worker()
        except BaseException as ex:
            if os.getpid() == self.pid:
                raise
            leave(ex)  # a worker's end: never through the launcher's clean-up

    def reap_workers(self) -> None:
        """SIGCHLD and the stop's loop: the sidecar's exit is ours to see, not gunicorn's."""
        for child in self.children:
            child.poll()  # first: gunicorn's waitpid(-1) would take its exit status
        super().reap_workers()

    def manage_workers(self) -> None:
        """Every turn of the loop: the launcher's checks too. The sidecar is forked once
        the first workers are (it closes the listeners it inherits): the pages the launcher
        writes while it spawns them would otherwise be copies, the sidecar keeping the
        originals (0.3 MB; checked by tests/test_footprint.py)."""
        super().manage_workers()
        for child in self.children:
            if child.proc is None:
                child.start()
        if self.destroyed():
            log.error("namespace '%s' was destroyed under this server: stopping, exit "
                      "status 1 (a supervisor restarts it on a fresh namespace)",
                      self.namespace)
            self.status, self.gone = 1, True
            raise StopIteration
        if not all(child.check() for child in self.children):
            self.status = 1
            raise StopIteration

    def wait_for_signals(self, timeout: float = 1.0) -> list[int]:
        """No longer than until a child's restart is due."""
        for due in (c.restart_at for c in self.children if c.restart_at is not None):
            timeout = min(timeout, max(0.0, due - time.monotonic()))
        signals: list[int] = super().wait_for_signals(timeout)
        return signals

    def handle_int(self) -> None:
        """Ctrl-C: the graceful stop of SIGTERM (gunicorn's is quick; a second one still is)."""
        self.handle_term()

    def handle_usr2(self) -> None:
        """gunicorn's re-exec would start a second server on the namespace: refused."""
        log.warning("SIGUSR2 ignored: restart zoldyq serve to upgrade it")

    def handle_hup(self) -> None:
        """Reload: the sidecar restarts, then new workers replace the old ones gracefully;
        the queues are untouched."""
        deadline = time.monotonic() + self.cfg.graceful_timeout + 5
        for child in self.children:
            child.reload(deadline)
        super().handle_hup()

    def stop(self, graceful: bool = True) -> None:
        """The sidecar stops alongside the workers."""
        deadline = time.monotonic() + self.cfg.graceful_timeout + 5
        for child in self.children:
            child.terminate()
        super().stop(graceful)
        for child in self.children:
            child.wait(deadline)
