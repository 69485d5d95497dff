"""gunicorn settings and server hooks, derived from the one ``Settings`` object.

``gunicorn.conf.py`` at the top of the repository re-exports this module, so
``gunicorn -c gunicorn.conf.py workers.http:app`` works alone; ``zoldyq
serve`` passes its flags as ZOLDYQ_* variables and loads it as
``python:zoldyq.serve.gunicorn_conf``.

The master creates (or attaches to) the namespace before forking
(``on_starting``) and destroys it on exit if it created it, unless
``keep_namespace`` or the launcher owns it (``ZOLDYQ_NAMESPACE_OWNER``).
Workers import the app after the fork (no ``preload_app``), so each attaches
on its own.
"""

from __future__ import annotations

import os
import time
from typing import Any

from gunicorn.glogging import Logger as _GunicornLogger

from zoldyq import broker as engine
from zoldyq import errors
from zoldyq.broker import open_namespace
from zoldyq.ops import logs
from zoldyq.serve.launcher import OWNER_ENV, STARTED_ENV
from zoldyq.settings import Settings

_settings = Settings.load()

bind = [f"[{_settings.host}]:{_settings.port}" if ":" in _settings.host
        else f"{_settings.host}:{_settings.port}"]
workers = _settings.workers
if _settings.worker_class == "gthread":
    threads = _settings.threads
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


def on_starting(server: Any) -> None:
    """Create the namespace before any worker exists; remember whether we made it."""
    os.environ.setdefault(STARTED_ENV, str(time.time()))
    if os.environ.get(OWNER_ENV):
        return
    if engine.is_shared(_settings):  # Redis: the data outlives every front end, nobody owns it
        open_namespace(_settings).close()
        return
    try:
        engine.attach(_settings.namespace).close()
    except errors.NamespaceNotFound:
        open_namespace(_settings).close()
        os.environ[OWNER_ENV] = f"gunicorn:{os.getpid()}"


def on_exit(server: Any) -> None:
    if os.environ.get(OWNER_ENV) == f"gunicorn:{os.getpid()}" and not _settings.keep_namespace:
        engine.destroy_namespace(_settings)

