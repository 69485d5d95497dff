"""``zoldyq.connect(url)``: one entry point, whichever engine is behind the URL.

    shm://NAME, shm:            this host's shared memory (namespace NAME, or the default)
    http://host:port, https://  a ZoldyQ server (the HTTP client engine, ``zoldyq.client``)
    redis://, rediss://, redis+cluster://, rediss+cluster://   the Redis engine

No URL: ``$ZOLDYQ_URL``, else the local default namespace. It sits beside
``zoldyq/broker.py`` (the layer that picks an engine) rather than in it because
the HTTP client is not an engine a server may serve from: ``broker.py`` is what
transports import, and they must never end up talking HTTP to themselves.
Engines are imported when first asked for, so ``import zoldyq`` stays light.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from zoldyq.errors import ConfigError

REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")
SCHEMES = ("shm", "http", "https", *REDIS_SCHEMES)


def connect(
    url: str | None = None,
    *,
    namespace: str | None = None,
    token: str | None = None,
    create: bool = True,
    **options: Any,
) -> Any:
    """A ``Broker`` for ``url`` (see the module docstring for the schemes).

    Args:
        url: where the queues are; default ``$ZOLDYQ_URL``, else ``shm:``.
        namespace: the namespace (shm: overrides the URL's; Redis: its key prefix).
        token: bearer token of a server (default ``$ZOLDYQ_TOKEN``).
        create: shm only: create the namespace if it does not exist (else attach,
            raising NamespaceNotFound).
        options: engine options (http: ``retries``, ``verify``, ``ws_url``).

    Raises:
        ConfigError: an unknown scheme, or an engine that is not installed.
    """
    url = url or os.environ.get("ZOLDYQ_URL") or "shm:"
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "shm":
        from zoldyq.shm import broker as shm

        rest = url[4:].lstrip("/")
        ns = namespace or urllib.parse.unquote(rest) or None
        return shm.create(ns) if create else shm.attach(ns)
    if scheme in ("http", "https"):
        from zoldyq.client import Broker

        if token is None:
            token = os.environ.get("ZOLDYQ_TOKEN") or None
        return Broker(url, namespace=namespace, token=token, **options)
    if scheme in REDIS_SCHEMES:
        from zoldyq import redis as redis_engine

        return redis_engine.connect(url, namespace=namespace, **options)
    raise ConfigError(
        f"unknown URL {url[:60]!r}: use shm://NAME, http(s)://host:port or redis://host:port"
    )
