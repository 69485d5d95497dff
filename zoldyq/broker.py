"""The broker layer: which engine serves a namespace, opened from the settings.

Transports, operations and process wiring get their ``Broker`` here, never
from an engine package, so a second engine plugs in at this one place.
"""

from __future__ import annotations

from zoldyq.settings import Settings
from zoldyq.shm import broker as _shm
from zoldyq.shm.broker import Broker, attach, create, destroy
from zoldyq.shm.listing import namespaces
from zoldyq.shm.owner import Ownership, holder

__all__ = [
    "Broker", "Ownership", "attach", "create", "destroy", "holder",
    "namespaces", "open_namespace", "serve_namespace",
]


def open_namespace(settings: Settings) -> Broker:
    """The namespace with the configured caps (attached to if it exists)."""
    return create(
        settings.namespace,
        max_queues=settings.max_queues,
        max_messages=settings.default_queue_capacity,
        max_bytes=settings.default_queue_max_bytes,
        max_message_bytes=settings.max_message_bytes,
        exist_ok=True,
    )


def serve_namespace(settings: Settings) -> tuple[Broker, bool]:
    """For the server that owns the namespace (holding its ``Ownership``): create it, or
    reattach and apply the configured default caps to new queues; True if created."""
    return _shm.serve(
        settings.namespace,
        max_queues=settings.max_queues,
        max_messages=settings.default_queue_capacity,
        max_bytes=settings.default_queue_max_bytes,
        max_message_bytes=settings.max_message_bytes,
    )
