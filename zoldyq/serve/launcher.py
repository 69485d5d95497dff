"""``zoldyq serve``: own the namespace, and be gunicorn's master and the WS sidecar's parent.

This process runs gunicorn's arbiter itself (``zoldyq.serve.master``: one process
fewer than forking a master, 3 MB less in all) and forks the sidecar as its other child
(PR_SET_PDEATHSIG: it gets SIGTERM however the launcher dies; the workers see their
parent change and stop). The sidecar and each worker run in their own session, so a
Ctrl-C reaches only the launcher, which turns it into the same graceful stop as
SIGTERM: the workers and the sidecar get SIGTERM together (long-polls answer 204 at
once, in-flight requests finish), then the namespace is destroyed if it is ours,
unless ``keep_namespace``. SIGHUP reloads, as gunicorn does: new workers replace the
old ones gracefully and the sidecar is restarted; the queues are untouched. A worker
that dies is replaced by the arbiter; a sidecar that dies is restarted with a growing
delay, and one that keeps dying at once is fatal.

The launcher first imports what the workers and the sidecar run (``preload``), so they
share those pages copy-on-write with it (an idle server: ~50 MB PSS instead of ~92 when
each was a fresh interpreter; ``scripts/footprint``). The sidecar gets what ``Popen``
gave it before: its own session, stdin on /dev/null, no descriptor but 0-2 (the
launcher closes its broker before forking, so that no child inherits its locks), and a
title naming its role (setproctitle); a worker drops the launcher's own descriptors
(its owner flock). Their environment is the launcher's own, with the settings in it:
rebuilding ``os.environ`` in each child copied 0.7 MB of shared pages in all.

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
import sys
import time
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from zoldyq import broker as engine
from zoldyq.broker import Broker, serve_namespace
from zoldyq.ops import logs, snapshot
from zoldyq.serve import current
from zoldyq.serve.children import STOP_SIGNALS, Child, exit_status
from zoldyq.settings import OWNER_ENV, STARTED_AT_ENV, Settings

if TYPE_CHECKING:
    from zoldyq.serve.master import Master

log = logging.getLogger("zoldyq.serve.launcher")

HTTP_ARGV = ["gunicorn", "-c", "python:zoldyq.serve.gunicorn_conf", "zoldyq.serve.workers.http:app"]
HTTP_USAGE = "%(prog)s [OPTIONS] [APP_MODULE]"  # gunicorn's own


def _build_http() -> Master:
    """gunicorn's configuration and arbiter, built before forking: code that runs once, in
    the launcher, instead of in each worker. A bad configuration is reported by gunicorn,
    which raises SystemExit(1)."""
    from gunicorn.app.wsgiapp import WSGIApplication

    from zoldyq.serve.master import Master

    saved, sys.argv = sys.argv, HTTP_ARGV
    try:
        return Master(WSGIApplication(HTTP_USAGE))
    finally:
        sys.argv = saved


def _build_app(settings: Settings) -> Any:
    """On shm, the app the workers serve, built here: its objects are then shared by
    every process instead of being written into each one's pages (~2 MB). Its engine's
    locks reopen themselves in a forked worker. On Redis each worker builds its own
    (asyncio connections must not be shared), and a failure is left to gunicorn to meet
    and report, as before."""
    if engine.is_shared(settings):
        return None
    from zoldyq.http import create_app

    try:
        return create_app(settings)
    except Exception:
        return None


def _run_ws(settings: Settings) -> int:
    """The WebSocket sidecar, in this (forked) process."""
    from setproctitle import setproctitle

    from zoldyq.ws import run

    setproctitle(f"zoldyq-ws[{settings.namespace}] (zoldyq.serve.workers.ws)")
    return run(settings, configured=True)


def preload(settings: Settings, own_fds: frozenset[int] = frozenset()) -> Master:
    """Import what the children run before forking them, then freeze it: the modules' pages
    are shared copy-on-write by the launcher, the sidecar and the workers (PSS splits
    them) instead of each process importing its own copy, and the collector never writes
    to them. On shm the app is built here too (``_build_app``); the launcher's own broker
    is closed before forking. ``own_fds``: the launcher's descriptors, which the workers
    close. Returns gunicorn's arbiter, built."""
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
    # falcon's app copies the table for static routes (we have none): the built-in one,
    # not the system's ~2000 types (0.5 MB of heap; read once per Redis worker). A later
    # guess_type() still reads the system's files (it looks at mimetypes._db).
    mimetypes.inited = True
    current.inherit(settings, _build_app(settings), own_fds)
    master = _build_http()
    # CPython's attribute cache holds a reference to each name it caches: a child that
    # replaced an entry would write to the launcher's name string, copying its page, and
    # free names only the cache held (0.3 MB in all; checked by tests/test_footprint.py)
    sys._clear_type_cache()
    gc.freeze()
    with contextlib.suppress(AttributeError):  # glibc: hand the heap freed by imports back
        ctypes.CDLL(None).malloc_trim(0)  # (else each child maps its share of it)
    return master


def _own_fds() -> frozenset[int]:
    """This process's descriptors but 0-2 (the directory listed is closed by then)."""
    fds = (int(fd) for fd in os.listdir("/proc/self/fd"))
    return frozenset(fd for fd in fds if fd > 2 and _is_open(fd))


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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
    signals: SimpleQueue[int] = SimpleQueue()  # the arbiter's, from here on: none is lost
    for s in STOP_SIGNALS:
        signal.signal(s, lambda signum, frame: signals.put_nowait(signum))
    status = 0
    master: Master | None = None
    try:
        master = preload(settings, _own_fds())
        master.SIG_QUEUE = signals
        master.namespace, master.destroyed = settings.namespace, destroyed
        if settings.ws:
            master.children = (Child("ws", functools.partial(_run_ws, settings)),)
        master.run()  # until it raises SystemExit
    except SystemExit as ex:
        status = 1 if (master is not None and master.status) or exit_status(ex) else 0
    finally:
        gone = master is not None and master.gone
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
