"""``zoldyq serve``: create the namespace, then run and supervise gunicorn and the WS sidecar.

The two servers are siblings, children of this process (the sidecar must not
be a child of the gunicorn master: the arbiter reaps children it does not
know). Each runs in its own session, so a Ctrl-C reaches only the launcher,
which turns it into the same graceful stop as SIGTERM: both children get
SIGTERM (long-polls answer 204 at once, in-flight requests finish), then the
namespace is destroyed unless ``keep_namespace``. A child that dies is
restarted with a growing delay; one that keeps dying at once is fatal.
Children get SIGTERM too if the launcher itself is killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time

from zoldyq import broker as engine
from zoldyq.broker import open_namespace
from zoldyq.ops import logs, snapshot
from zoldyq.settings import Settings

log = logging.getLogger("zoldyq.serve.launcher")

OWNER_ENV = "ZOLDYQ_NAMESPACE_OWNER"  # tells gunicorn not to destroy the namespace
STARTED_ENV = "ZOLDYQ_STARTED_AT"
HTTP_CMD = ["-m", "gunicorn", "-c", "python:zoldyq.serve.gunicorn_conf", "workers.http:app"]
WS_CMD = ["-m", "workers.ws"]
QUICK_DEATH = 5.0  # seconds: a child that dies sooner counts towards giving up
MAX_QUICK_DEATHS = 5
POLL = 0.1
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the launcher dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Child:
    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name, self.args, self.env = name, args, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, *self.args], env=self.env, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        self.started = time.monotonic()
        self.restart_at = None
        log.info("started %s (pid %d)", self.name, self.proc.pid)

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


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a graceful stop, 1 if a child cannot stay up."""
    logs.setup(settings)
    broker = open_namespace(settings)
    try:
        snapshot.on_start(broker, settings)  # --restore
    except BaseException:
        if not settings.keep_namespace and not engine.is_shared(settings):
            engine.destroy_namespace(settings)
        raise
    finally:
        broker.close()
    env = {**os.environ, **settings.as_env(), OWNER_ENV: "launcher",
           STARTED_ENV: str(time.time())}
    children = [Child("http", HTTP_CMD, env)]
    if settings.ws and importlib.util.find_spec("workers.ws") is not None:
        children.append(Child("ws", WS_CMD, env))
    stop: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        stop.append(signum)  # the loop below does the work

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    status = 0
    try:
        for child in children:
            child.start()
        while not stop:
            time.sleep(POLL)
            if not all(child.check() for child in children):
                status = 1
                break
        if stop:
            log.info("got %s: stopping", signal.Signals(stop[0]).name)
    finally:
        for child in children:
            child.terminate()
        deadline = time.monotonic() + settings.graceful_timeout + 5
        for child in children:
            child.wait(deadline)
        for s, handler in old.items():
            signal.signal(s, handler)
        saved = snapshot.on_exit(settings)  # --snapshot-on-exit; False: keep the namespace
        if not settings.keep_namespace and saved and not engine.is_shared(settings):
            engine.destroy_namespace(settings)  # on Redis the data outlives any front end
            log.info("namespace '%s' destroyed", settings.namespace)
        elif not saved:
            status = status or 1
    return status
