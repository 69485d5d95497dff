"""gunicorn settings and server hooks, derived from the one ``Settings`` object.

``gunicorn.conf.py`` at the top of the repository re-exports this module, so
``gunicorn -c gunicorn.conf.py workers.http:app`` works alone; ``zoldyq
serve`` passes its flags as ZOLDYQ_* variables and loads it as
``python:zoldyq.serve.gunicorn_conf``.

The master takes the namespace's owner flock and creates (or reattaches to)
the namespace before forking (``on_starting``), and destroys it on exit if it
is its own (see ``zoldyq.serve.launcher``), unless ``keep_namespace`` or the
launcher owns it (``ZOLDYQ_NAMESPACE_OWNER``).
On shm the master then builds the app (``when_ready``; under ``zoldyq serve`` the
launcher built it already) and the workers inherit it, attached broker included (its
locks reopen themselves after a fork); on Redis each worker builds its own after the fork.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
from typing import Any

from gunicorn.glogging import Logger as _GunicornLogger

from zoldyq import broker as engine
from zoldyq import errors
from zoldyq.broker import serve_namespace
from zoldyq.ops import logs
from zoldyq.serve import current
from zoldyq.settings import OWNER_ENV, STARTED_AT_ENV

_settings = current.settings()

bind = [f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host
        else f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
if _settings.worker_class == "gthread":
    threads = _settings.threads
    # gunicorn_h1c (installed for the asgi worker) would answer an over-long request line
    # 431 instead of 414 here: gthread keeps gunicorn's Python parser and its answers
    http_parser = "python"
worker_class = {
    "asgi": "zoldyq.serve.worker.AsgiWorker",
    "gthread": "zoldyq.serve.worker.GthreadWorker",
}[_settings.worker_class]
graceful_timeout = int(-(-_settings.graceful_timeout // 1))  # gunicorn wants whole seconds
timeout = 30  # heartbeat; long-polls never block it (asgi: a coroutine, gthread: a thread)
keepalive = 1  # idle connections close after 1 s, so a stopping worker never waits longer
asgi_lifespan = "off"
control_socket_disable = True  # one shared default socket path would clash between servers
proc_name = f"zoldyq-http[{_settings.namespace}]"
logconfig_dict = logs.logconfig(_settings)
accesslog = "-" if _settings.log_level == "debug" else None


class Logger(_GunicornLogger):
    """gunicorn's logger, building access lines only at debug level.

    With ``logconfig_dict`` set gunicorn builds every access line even when
    the logger drops it: about a tenth of an enqueue's CPU.
    """

    def _compute_access_log_enabled(self) -> bool:
        return _settings.log_level == "debug"


logger_class = Logger
if _settings.tls_cert:
    certfile = _settings.tls_cert
    keyfile = _settings.tls_key


_claim: engine.Claim | None = None
_ours = False
_inode = 0  # the registry's inode: tells our namespace from one re-created since


def on_starting(server: Any) -> None:
    """Own the namespace (refusing if another server does), create or reattach to it
    before any worker exists, and remember whether it is ours to destroy."""
    global _claim, _ours, _inode
    os.environ.setdefault(STARTED_AT_ENV, str(time.time()))
    if os.environ.get(OWNER_ENV):
        return  # the launcher owns it
    _claim = engine.claim(_settings)  # on Redis nobody owns it: never ours to destroy
    try:
        broker, created = serve_namespace(_settings)
    except BaseException:
        _claim.release(unlink=True)
        raise
    registry = getattr(broker, "registry", None)  # shm only: Redis is never ours to destroy
    _inode = registry.inode if registry is not None else 0
    broker.close()
    _ours = created or _claim.adopted
    os.environ[OWNER_ENV] = f"gunicorn:{os.getpid()}"


def when_ready(server: Any) -> None:
    """Get the app in the master, once the namespace exists (``preload_app`` would build
    it before ``on_starting``): the workers share its pages instead of each building its
    own. Under ``zoldyq serve`` the launcher built it already (``current.app``). shm only:
    the engine's locks reopen themselves in a forked worker, while a Redis client's
    asyncio connections must not be shared, so on Redis each worker builds its own.
    If it fails here, each worker tries again and fails as it did before."""
    if engine.is_shared(_settings):
        return
    try:
        server.app.wsgi()
    except Exception:
        server.log.exception("building the app in the master failed: each worker builds its own")
        server.app.callable = None


def pre_fork(server: Any, worker: Any) -> None:
    """What the master built (config, app) goes where the collector never looks, so no
    worker's collection writes to (and copies) the pages it shares with the master."""
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """A stop signal that reaches a new worker before it sets its own handlers meets the
    master's, inherited, which only queue it for a master loop that never runs here: the
    worker would miss it and hold a graceful stop for ``graceful_timeout`` (a worker
    booting when SIGTERM came did). With the defaults it ends at once: it holds nothing
    yet, as it accepts no connection before its handlers are set.

    Under ``zoldyq serve`` the master is the launcher. The worker gets its own session,
    so a terminal's Ctrl-C reaches only the launcher, which stops the workers gracefully
    (the worker would quit at once), and drops the launcher's own descriptors: its owner
    flock is not the worker's (a second server would be refused until the workers exit)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    if os.environ.get(OWNER_ENV) == "launcher":
        os.setsid()
        for fd in current.launcher_fds():
            os.close(fd)


def _still_ours() -> bool:
    """Not destroyed (and perhaps re-created by someone else) while we served it."""
    try:
        with engine.attach(_settings.namespace) as broker:
            return broker.registry.inode == _inode and not broker.registry.gone
    except errors.ZoldyQError:
        return False


def on_exit(server: Any) -> None:
    """Destroy the namespace if it is ours; exit 1, as the launcher does, if it was
    destroyed under us (a supervisor then restarts us on a fresh one)."""
    if _claim is None:
        return
    gone = _inode != 0 and not _still_ours()  # shm only
    destroy = _ours and not _settings.keep_namespace and not gone
    if destroy:
        engine.destroy(_settings.namespace)
    _claim.release(unlink=destroy or not _ours)
    if gone:
        server.log.error("namespace '%s' was destroyed under this server: exit status 1",
                         _settings.namespace)
        sys.exit(1)
