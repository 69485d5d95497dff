"""The broker layer: which engine serves a namespace, opened from the settings.

Transports, operations and process wiring get their ``Broker`` here, never
from an engine package, so a second engine plugs in at this one place.
``settings.backend`` picks it: ``shm`` (this host's shared memory, the
default) or a ``redis://`` URL (any number of front ends on any hosts).
"""

from __future__ import annotations

from typing import Any

from zoldyq.settings import Settings
from zoldyq.shm.broker import Broker, attach, create, destroy

__all__ = [
    "Broker", "attach", "attach_namespace", "create", "destroy", "destroy_namespace",
    "is_shared", "open_namespace",
]  # fmt: skip


def is_shared(settings: Settings) -> bool:
    """True when the data outlives this server (Redis): stopping it never deletes any."""
    return settings.backend != "shm"


def _redis(settings: Settings, **defaults: int) -> Any:
    from zoldyq.redis import connect

    return connect(settings.backend, settings.namespace,
                   password_file=settings.redis_password_file, **defaults)


def open_namespace(settings: Settings) -> Any:
    """The namespace with the configured caps (attached to if it exists)."""
    caps = {
        "max_queues": settings.max_queues,
        "max_messages": settings.default_queue_capacity,
        "max_bytes": settings.default_queue_max_bytes,
        "max_message_bytes": settings.max_message_bytes,
    }
    if is_shared(settings):
        return _redis(settings, **caps)
    return create(settings.namespace, exist_ok=True, **caps)


def attach_namespace(settings: Settings) -> Any:
    """The existing namespace (shm raises NamespaceNotFound when there is none)."""
    if is_shared(settings):
        return _redis(settings)
    return attach(settings.namespace)


def destroy_namespace(settings: Settings) -> None:
    """Delete every queue and message of the namespace, on whichever engine."""
    if is_shared(settings):
        from zoldyq.redis import destroy as destroy_redis

        destroy_redis(settings.backend, settings.namespace,
                      password_file=settings.redis_password_file)
    else:
        destroy(settings.namespace)
