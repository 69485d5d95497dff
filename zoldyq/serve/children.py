"""The launcher's forked children (the WebSocket sidecar): started, watched, restarted
with a growing delay, stopped; and how any forked server process ends (``leave``: never
through the launcher's frames and clean-up). Shared by the launcher and the arbiter it
runs (``zoldyq.serve.master``)."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

log = logging.getLogger("zoldyq.serve.launcher")

QUICK_DEATH = 5.0  # seconds: a child that dies sooner counts towards giving up
MAX_QUICK_DEATHS = 5
PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def exit_status(ex: BaseException) -> int:
    """The status a process ending on ``ex`` exits with, as Python's own exit would."""
    if not isinstance(ex, SystemExit):
        traceback.print_exception(ex)
        return 1
    if isinstance(ex.code, str):
        print(ex.code, file=sys.stderr)
    return ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)


def leave(ex: BaseException | int) -> NoReturn:
    """End a forked child at once: never through the launcher's frames and clean-up."""
    code = ex if isinstance(ex, int) else exit_status(ex)
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _in_child(target: Callable[[], int], launcher: int) -> NoReturn:
    """Become a server process: what ``Popen(start_new_session=True, close_fds=True)`` of a
    fresh interpreter gave, but keeping the preloaded modules."""
    try:
        os.setsid()
        for s in (*STOP_SIGNALS, signal.SIGCHLD, signal.SIGQUIT, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU):
            signal.signal(s, signal.SIG_DFL)  # not the arbiter's
        _die_with_parent(launcher)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        # The launcher's claim is not the child's (subprocess's close_fds did this); its
        # object stays referenced on this stack, so the fd is never closed twice.
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        leave(target())
    except BaseException as ex:
        leave(ex)


_libc = ctypes.CDLL(None, use_errno=True)  # here, not in each child: ctypes copies pages
_prctl = _libc.prctl


def _die_with_parent(launcher: int) -> None:
    """In the child: get SIGTERM when the launcher dies, however it dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != launcher:
        os._exit(1)  # the launcher died before the prctl


class Process:
    """A forked child, with what the launcher used of ``subprocess.Popen``."""

    def __init__(self, target: Callable[[], int]) -> None:
        self.returncode: int | None = None
        for stream in (sys.stdout, sys.stderr):  # or the child writes the same bytes again
            stream.flush()
        launcher = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            _in_child(target, launcher)

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped by the arbiter's waitpid(-1): it died
                pid, status = self.pid, 1 << 8  # its status is lost: say 1
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"pid {self.pid}", timeout or 0.0)
            time.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class Child:
    """The sidecar: forked, and restarted with a growing delay when it dies."""

    def __init__(self, name: str, target: Callable[[], int]) -> None:
        self.name, self.target = name, target
        self.proc: Process | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = Process(self.target)
        self.started = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def poll(self) -> None:
        if self.proc is not None:
            self.proc.poll()

    def check(self) -> bool:
        """Restart the child if it died (after a delay); False when it keeps dying at once."""
        now = time.monotonic()
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.start()
            return True
        assert self.proc is not None
        code = self.proc.poll()
        if code is None:
            return True
        quick = now - self.started < QUICK_DEATH
        self.quick_deaths = self.quick_deaths + 1 if quick else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            log.error("%s exited with %s %d times in a row right after starting: giving up",
                      self.name, code, self.quick_deaths)
            return False
        delay = 0.2 * 2 ** self.quick_deaths
        log.error("%s (pid %d) exited with %s; restarting in %.1f s",
                  self.name, self.proc.pid, code, delay)
        self.restart_at = now + delay
        return True

    def reload(self, deadline: float) -> None:
        """SIGHUP: stop and start again (unless a restart is due anyway)."""
        if self.proc is None or self.restart_at is not None:
            return
        self.terminate()
        self.wait(deadline)
        self.quick_deaths = 0
        self.start()

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> int | None:
        if self.proc is None or self.restart_at is not None:
            return 0
        try:
            return self.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("%s (pid %d) did not stop in time: killing it", self.name, self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait()
