"""The broker layer: which engine serves a namespace, opened from the settings.

Transports, operations and process wiring get their ``Broker`` here, never
from an engine package, so a second engine plugs in at this one place.
``settings.backend`` picks it: ``shm`` (this host's shared memory, the
default) or a ``redis://`` URL (any number of front ends on any hosts).
"""

from __future__ import annotations

from typing import Any

from zoldyq.settings import Settings
from zoldyq.shm import broker as _shm
from zoldyq.shm.broker import Broker, attach, create, destroy
from zoldyq.shm.listing import namespaces
from zoldyq.shm.owner import Ownership, holder

__all__ = [
    "Broker", "Claim", "Ownership", "attach", "attach_namespace", "claim", "create", "destroy",
    "destroy_namespace", "gone", "holder", "is_shared", "namespaces", "open_namespace",
    "serve_namespace",
]  # fmt: skip


def is_shared(settings: Settings) -> bool:
    """True when the data outlives this server (Redis): stopping it never deletes any."""
    return settings.backend != "shm"


def _caps(settings: Settings) -> dict[str, int]:
    return {
        "max_queues": settings.max_queues,
        "max_messages": settings.default_queue_capacity,
        "max_bytes": settings.default_queue_max_bytes,
        "max_message_bytes": settings.max_message_bytes,
    }


def _redis(settings: Settings, **defaults: int) -> Any:
    from zoldyq.redis import connect

    return connect(settings.backend, settings.namespace,
                   password_file=settings.redis_password_file, **defaults)


def open_namespace(settings: Settings) -> Any:
    """The namespace with the configured caps (attached to if it exists)."""
    if is_shared(settings):
        return _redis(settings, **_caps(settings))
    return create(settings.namespace, exist_ok=True, **_caps(settings))


def attach_namespace(settings: Settings) -> Any:
    """The existing namespace (shm raises NamespaceNotFound when there is none)."""
    if is_shared(settings):
        return _redis(settings)
    return attach(settings.namespace)


def serve_namespace(settings: Settings) -> tuple[Any, bool]:
    """For the server that owns the namespace (holding its ``claim``): create it, or
    reattach and apply the configured default caps to new queues; True if created.
    On Redis a front end never creates it in that sense (it is never its to destroy)."""
    if is_shared(settings):
        return open_namespace(settings), False
    return _shm.serve(settings.namespace, **_caps(settings))


class _SharedClaim:
    """On Redis nobody owns a namespace: any number of servers front it, none destroys it."""

    adopted = False

    def release(self, unlink: bool = False) -> None:
        pass


Claim = Ownership | _SharedClaim


def claim(settings: Settings) -> Claim:
    """The server's claim on its namespace: shm's owner flock, or nothing on Redis."""
    return _SharedClaim() if is_shared(settings) else Ownership(settings.namespace)


def gone(broker: Any) -> bool:
    """True when the namespace was destroyed under this server (shm; Redis re-makes it)."""
    registry = getattr(broker, "registry", None)
    return bool(registry is not None and registry.gone)


def destroy_namespace(settings: Settings) -> None:
    """Delete every queue and message of the namespace, on whichever engine."""
    if is_shared(settings):
        from zoldyq.redis import destroy as destroy_redis

        destroy_redis(settings.backend, settings.namespace,
                      password_file=settings.redis_password_file)
    else:
        destroy(settings.namespace)
