"""The broker layer: which engine serves a namespace, opened from the settings.

Transports, operations and process wiring get their ``Broker`` here, never
from an engine package, so a second engine plugs in at this one place.
"""

from __future__ import annotations

from zoldyq.settings import Settings
from zoldyq.shm.broker import Broker, attach, create, destroy
from zoldyq.shm.listing import attached_pids, namespaces

__all__ = ["Broker", "attach", "attached_pids", "create", "destroy", "namespaces",
           "open_namespace"]


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
