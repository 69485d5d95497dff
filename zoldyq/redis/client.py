"""Redis connections from a backend URL, and the one place redis errors become ZoldyQ's.

``redis://[:password@]host:port/db``, ``rediss://`` (TLS) and
``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) select the
server. The password comes from the URL, else ``ZOLDYQ_REDIS_PASSWORD``, else
the file named by ``ZOLDYQ_REDIS_PASSWORD_FILE``; it is never logged:
``safe_url`` is what messages show.

Timeouts are short and bounded: no ZoldyQ command blocks on the server
(waiting uses pub/sub wake-ups, see ``bell.py``), so a socket that stays
silent for ``SOCKET_TIMEOUT`` means the server is gone, and a request
answers 503 ``backend_unavailable`` instead of hanging. The asyncio client
takes no socket timeout of its own (redis-py would start a task per send for
it): ``Calls`` bounds each whole call instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.retry
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

from zoldyq.errors import BackendUnavailable, ConfigError

T = TypeVar("T")
SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
#: what a failing Redis raises, turned into BackendUnavailable at the engine's edge
ERRORS: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.RedisClusterException,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.TryAgainError,
)


def is_redis_url(backend: str) -> bool:
    return backend.split("://", 1)[0].lower() in SCHEMES


def safe_url(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def password(path: str | None = None) -> str | None:
    """ZOLDYQ_REDIS_PASSWORD, else the first line of ``path`` (or ZOLDYQ_REDIS_PASSWORD_FILE)."""
    if os.environ.get("ZOLDYQ_REDIS_PASSWORD"):
        return os.environ["ZOLDYQ_REDIS_PASSWORD"]
    path = path or os.environ.get("ZOLDYQ_REDIS_PASSWORD_FILE")
    if path:
        try:
            return Path(path).read_text().strip() or None
        except OSError as ex:
            raise ConfigError(f"cannot read the Redis password file {path}: {ex}") from None
    return None


def _options(url: str, password_file: str | None) -> tuple[str, bool, dict[str, Any]]:
    """(url for redis-py, cluster?, keyword options)."""
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ConfigError(f"backend must be shm or a redis:// URL, got {safe_url(url)!r}")
    cluster = scheme.endswith("+cluster")
    plain = ("rediss" if scheme.startswith("rediss") else "redis") + url[len(scheme):]
    kw: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
    }
    if not cluster:
        kw["retry"] = Retry(NoBackoff(), 0)
        kw["health_check_interval"] = 0
    if urlsplit(plain).password is None:
        pw = password(password_file)
        if pw:
            kw["password"] = pw
    return plain, cluster, kw


def sync_client(url: str, password_file: str | None = None) -> Any:
    plain, cluster, kw = _options(url, password_file)
    if cluster:
        return redis.cluster.RedisCluster.from_url(plain, **kw)
    return redis.Redis.from_url(plain, **kw)


def async_client(url: str, password_file: str | None = None) -> Any:
    plain, cluster, kw = _options(url, password_file)
    kw["socket_timeout"] = None  # Calls bounds each call instead (None: not the default 5 s)
    if "retry" in kw:  # the asyncio flavour, whose failure hook (drop the connection) runs
        kw["retry"] = redis.asyncio.retry.Retry(NoBackoff(), 0)
    if cluster:
        return redis.asyncio.cluster.RedisCluster.from_url(plain, **kw)
    return redis.asyncio.Redis.from_url(plain, **kw)


class Calls:
    """Awaits calls of one asyncio client, each bounded to about SOCKET_TIMEOUT.

    One timer for all of them, checking every quarter of SOCKET_TIMEOUT while any is
    in flight, cancels the calls that outlived it (``asyncio.timeout`` per call would
    cost a timer of its own each time: as much as the rest of our side of a call). A
    call cut short leaves its connection half-used, so the client drops every
    connection (the server is stuck anyway) and the next call makes new ones.
    """

    def __init__(self, url: str, client: Any) -> None:
        self.url = url
        self.client = client
        self._started: dict[asyncio.Task[Any], float] = {}  # in flight -> loop time
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None

    async def __call__(self, call: Awaitable[T]) -> T:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._started[task] = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(SOCKET_TIMEOUT / 4, self._check)
        try:
            return await call
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by its caller
            self._expired.discard(task)
            task.uncancel()
            with contextlib.suppress(*ERRORS, OSError):
                await self.client.aclose()
            raise BackendUnavailable(safe_url(self.url), "timed out") from None
        except ERRORS as ex:
            raise BackendUnavailable(safe_url(self.url), str(ex) or type(ex).__name__) from None
        finally:
            self._started.pop(task, None)

    def _check(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for task, started in list(self._started.items()):
            if now - started > SOCKET_TIMEOUT and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        if self._started:
            self._timer = loop.call_later(SOCKET_TIMEOUT / 4, self._check)


@contextlib.contextmanager
def mapped(url: str) -> Iterator[None]:
    """Run a block of redis calls; an unreachable server raises BackendUnavailable."""
    try:
        yield
    except ERRORS as ex:
        raise BackendUnavailable(safe_url(url), str(ex) or type(ex).__name__) from None
