"""``create_app``: the Falcon app for the configured worker class, attached to the namespace."""

from __future__ import annotations

from typing import Any

from zoldyq import api
from zoldyq import broker as engine
from zoldyq.http import core, shutdown
from zoldyq.settings import Settings


def create_app(settings: Settings, broker: api.Broker | None = None) -> Any:
    """An ASGI app (``worker_class = asgi``) or a WSGI app (``gthread``).

    Attaches to ``settings.namespace`` unless given ``broker``; the broker is
    registered so that a stopping worker wakes its long-polls.
    """
    if broker is None:
        broker = engine.attach_namespace(settings)
    shutdown.register(broker)
    ctx = core.Ctx(settings, broker)
    if settings.worker_class == "asgi":
        from zoldyq.http import asgi

        return asgi.create(ctx)
    from zoldyq.http import wsgi

    return wsgi.create(ctx)
