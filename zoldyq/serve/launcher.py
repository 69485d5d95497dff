"""``zoldyq serve``: own the namespace, then run and supervise gunicorn and the WS sidecar.

The two servers are siblings, children of this process (the sidecar must not
be a child of the gunicorn master: the arbiter reaps children it does not
know). Each runs in its own session, so a Ctrl-C reaches only the launcher,
which turns it into the same graceful stop as SIGTERM: both children get
SIGTERM (long-polls answer 204 at once, in-flight requests finish), then the
namespace is destroyed if it is ours, unless ``keep_namespace``. SIGHUP
reloads, as gunicorn does: gunicorn gracefully replaces its workers and the
sidecar is restarted; the queues are untouched. A child that dies is
restarted with a growing delay; one that keeps dying at once is fatal.
Children get SIGTERM too if the launcher itself is killed (PR_SET_PDEATHSIG).

Both are forked from this process, not started as fresh interpreters: the
launcher first imports what they run (``preload``), so the launcher, the
sidecar, the master and its workers share those pages copy-on-write (an idle
server: ~51 MB PSS instead of ~92; ``scripts/footprint``). A child gets what
``Popen`` gave it before: its own session, stdin on /dev/null, no descriptor
but 0-2 (the launcher closes its broker before forking, so that no child
inherits its locks; the master keeps those of the app built for it), and a title
naming its role (setproctitle). Their environment is the launcher's own, with the
settings in it: rebuilding ``os.environ`` in each child copied 0.7 MB of shared pages
in all.

Ownership (``zoldyq.shm.owner``): the launcher holds the namespace's owner
flock for its whole life, so a second server on the same namespace is
refused. It destroys at exit only a namespace that is its own: one it
created, or one a dead server left (adopted). A namespace made by someone
else (a local process) is served and left alone. If the namespace is
destroyed under it (``zoldyq destroy --force``), the launcher stops its
children and exits 1 for its supervisor to restart it, and destroys nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib
import logging
import mimetypes
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from zoldyq import broker as engine
from zoldyq.broker import Broker, serve_namespace
from zoldyq.ops import logs, snapshot
from zoldyq.serve import current
from zoldyq.settings import OWNER_ENV, STARTED_AT_ENV, Settings

if TYPE_CHECKING:
    from gunicorn.arbiter import Arbiter

log = logging.getLogger("zoldyq.serve.launcher")

QUICK_DEATH = 5.0  # seconds: a child that dies sooner counts towards giving up
MAX_QUICK_DEATHS = 5
POLL = 0.1
PR_SET_PDEATHSIG = 1
HTTP_ARGV = ["gunicorn", "-c", "python:zoldyq.serve.gunicorn_conf", "zoldyq.serve.workers.http:app"]
HTTP_USAGE = "%(prog)s [OPTIONS] [APP_MODULE]"  # gunicorn's own


_arbiter: Arbiter | None = None  # gunicorn's, built by ``preload``
_app_fds: frozenset[int] = frozenset()  # the descriptors of the app ``preload`` built


def _build_http() -> None:
    """gunicorn's configuration and Arbiter, built before forking: code that runs once, in
    the launcher, instead of copying the pages it touches into the master (~3 MB). A
    failure (a bad config) is left to the master to meet and report, as it did before."""
    global _arbiter
    from gunicorn.app.wsgiapp import WSGIApplication
    from gunicorn.arbiter import Arbiter

    saved, sys.argv = sys.argv, HTTP_ARGV
    try:
        _arbiter = Arbiter(WSGIApplication(HTTP_USAGE))
    except (Exception, SystemExit):
        _arbiter = None
    finally:
        sys.argv = saved


def _build_app(settings: Settings) -> Any:
    """On shm, the app the gunicorn master would build, built here: its objects are then
    shared by every process instead of being written into the master's pages (~2 MB).
    Its engine's locks reopen themselves in a forked process (as the workers' always did)
    and the master keeps its descriptors (``_app_fds``); the launcher never calls it. On
    Redis each worker builds its own (asyncio connections must not be shared), and a
    failure is left to the master to meet and report, as before."""
    global _app_fds
    if engine.is_shared(settings):
        return None
    from zoldyq.http import create_app

    before = set(os.listdir("/proc/self/fd"))
    try:
        app = create_app(settings)
    except Exception:
        return None
    _app_fds = frozenset(int(fd) for fd in set(os.listdir("/proc/self/fd")) - before)
    return app


def _run_http() -> int:
    """The gunicorn master, in this (forked) process: ``gunicorn -c ... workers.http:app``."""
    from gunicorn.app.wsgiapp import run as gunicorn

    sys.argv = HTTP_ARGV
    if _arbiter is None:
        gunicorn()  # raises SystemExit, in the master and in every worker it forks
        return 1
    try:  # what gunicorn's BaseApplication.run does around it
        _arbiter.run()
    except RuntimeError as ex:
        print(f"\nError: {ex}\n", file=sys.stderr)
        return 1
    return 0


def _run_ws(settings: Settings) -> int:
    """The WebSocket sidecar, in this (forked) process."""
    from setproctitle import setproctitle

    from zoldyq.ws import run

    setproctitle(f"zoldyq-ws[{settings.namespace}] (zoldyq.serve.workers.ws)")
    return run(settings, configured=True)


def preload(settings: Settings) -> None:
    """Import what the children run before forking them, then freeze it: the modules' pages
    are shared copy-on-write by the launcher, the sidecar, the master and its workers
    (PSS splits them) instead of each process importing its own copy, and the collector
    never writes to them. On shm the app is built here too (``_build_app``); the
    launcher's own broker is closed before forking."""
    http = "zoldyq.http.asgi" if settings.worker_class == "asgi" else "zoldyq.http.wsgi"
    for name in ("setproctitle", "gunicorn.app.wsgiapp", "gunicorn.glogging",
                 "zoldyq.serve.worker", "zoldyq.ops.metrics", http,
                 "zoldyq.serve.workers.http"):
        importlib.import_module(name)
    if settings.worker_class == "asgi":
        for optional in ("uvloop", "gunicorn_h1c", "gunicorn.instrument.statsd"):
            # the first two: gunicorn's asgi worker picks them; statsd: it reads a class
            with contextlib.suppress(ImportError):
                importlib.import_module(optional)
    if settings.ws:
        importlib.import_module("zoldyq.ws")
    current.inherit(settings, _build_app(settings))
    _build_http()
    mimetypes.init()  # falcon's Response reads the system's table: once, not per worker
    gc.freeze()
    with contextlib.suppress(AttributeError):  # glibc: hand the heap freed by imports back
        ctypes.CDLL(None).malloc_trim(0)  # (else each child maps its share of it)


def _in_child(target: Callable[[], int], launcher: int, keep: frozenset[int]) -> NoReturn:
    """Become a server process: what ``Popen(start_new_session=True, close_fds=True)`` of a
    fresh interpreter gave, but keeping the preloaded modules."""
    code = 1
    try:
        os.setsid()
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)
        _die_with_parent(launcher)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        # The launcher's claim is not the child's (subprocess's close_fds did this); its
        # object stays referenced on this stack, so the fd is never closed twice. ``keep``:
        # the descriptors of the app the launcher built for this child.
        low = 3
        for fd in sorted(keep):
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        code = target()
    except SystemExit as ex:
        code = ex.code if isinstance(ex.code, int) else (0 if ex.code is None else 1)
        if isinstance(ex.code, str):
            print(ex.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


_libc = ctypes.CDLL(None, use_errno=True)  # here, not in each child: ctypes copies pages
_prctl = _libc.prctl


def _die_with_parent(launcher: int) -> None:
    """In the child: get SIGTERM when the launcher dies, however it dies."""
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != launcher:
        os._exit(1)  # the launcher died before the prctl


class Process:
    """A forked child, with what the launcher used of ``subprocess.Popen``."""

    def __init__(self, target: Callable[[], int], keep: frozenset[int] = frozenset()) -> None:
        self.returncode: int | None = None
        for stream in (sys.stdout, sys.stderr):  # or the child writes the same bytes again
            stream.flush()
        launcher = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:
            _in_child(target, launcher, keep)

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
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
    def __init__(self, name: str, target: Callable[[], int], app: bool = False) -> None:
        self.name, self.target, self.app = name, target, app  # app: it serves the app
        self.proc: Process | None = None
        self.started = 0.0
        self.quick_deaths = 0
        self.restart_at: float | None = None

    def start(self) -> None:
        self.proc = Process(self.target, _app_fds if self.app else frozenset())
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

    def reload(self, timeout: float) -> None:
        """SIGHUP: gunicorn replaces its workers gracefully itself; others restart."""
        if self.proc is None or self.restart_at is not None or self.proc.poll() is not None:
            return
        if self.name == "http":
            self.proc.send_signal(signal.SIGHUP)
            return
        self.terminate()
        self.wait(time.monotonic() + timeout)
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


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; 0 after a graceful stop, 1 if a child cannot stay up
    or the namespace was destroyed under us. Raises NamespaceBusy if another server
    owns the namespace."""
    logs.setup(settings)
    claim = engine.claim(settings)  # on Redis nobody owns it: never ours to destroy
    try:
        broker, created = serve_namespace(settings)
    except BaseException:
        claim.release(unlink=True)  # nothing of ours is left to own
        raise
    ours = created or claim.adopted
    if not created and not engine.is_shared(settings):
        _log_reattached(broker, settings, ours)
    try:
        snapshot.on_start(broker, settings)  # --restore
    except BaseException:
        broker.close()
        if not settings.keep_namespace and ours:
            engine.destroy(settings.namespace)
        claim.release(unlink=not ours or not settings.keep_namespace)
        raise
    # the children's environment, inherited: each rebuilding its os.environ copied pages
    os.environ.update({**settings.as_env(), OWNER_ENV: "launcher",
                       STARTED_AT_ENV: str(time.time())})
    destroyed = engine.gone_check(broker)
    broker.close()  # before forking: a child must not inherit its locks or connections
    children = [Child("http", _run_http, app=True)]
    if settings.ws:
        children.append(Child("ws", functools.partial(_run_ws, settings)))
    signals: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        signals.append(signum)  # the loop below does the work

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    status = 0
    gone = False
    try:
        preload(settings)
        for child in children:
            child.start()
        while True:
            while signals and signals[0] == signal.SIGHUP:
                signals.pop(0)
                log.info("got SIGHUP: reloading (workers and sidecar restart, queues kept)")
                for child in children:
                    child.reload(settings.graceful_timeout + 5)
            if signals:
                log.info("got %s: stopping", signal.Signals(signals[0]).name)
                break
            time.sleep(POLL)
            if destroyed():
                log.error("namespace '%s' was destroyed under this server: stopping, exit "
                          "status 1 (a supervisor restarts it on a fresh namespace)",
                          settings.namespace)
                status, gone = 1, True
                break
            if not all(child.check() for child in children):
                status = 1
                break
    finally:
        for child in children:
            child.terminate()
        deadline = time.monotonic() + settings.graceful_timeout + 5
        for child in children:
            child.wait(deadline)
        for s, handler in old.items():
            signal.signal(s, handler)
        saved = gone or snapshot.on_exit(settings)  # --snapshot-on-exit; False: keep it
        destroy = ours and not gone and saved and not settings.keep_namespace
        if destroy:
            engine.destroy(settings.namespace)
            log.info("namespace '%s' destroyed", settings.namespace)
        elif not saved:
            status = status or 1
        elif not ours and not gone:
            log.info("namespace '%s' kept: this server did not create it", settings.namespace)
        claim.release(unlink=destroy or gone or not ours)
    return status


def _log_reattached(broker: Broker, settings: Settings, ours: bool) -> None:
    """Say what a reattach keeps and what the new settings change (issue: a restart after
    a crash that silently ignored them)."""
    n = len(broker.queues())
    who = "left by a server that stopped or died" if ours else "created by another process"
    log.warning("namespace '%s' already exists (%s): reattached, its %d queue(s) and their "
                "messages kept; queues created from now on get the configured default caps",
                settings.namespace, who, n)
    if broker.max_queues != settings.max_queues:
        log.warning("namespace '%s' keeps max_queues=%d, set when it was created: "
                    "max_queues=%d applies only to a new namespace (destroy it to change it)",
                    settings.namespace, broker.max_queues, settings.max_queues)
