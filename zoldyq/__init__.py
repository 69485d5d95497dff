"""ZoldyQ: named, bounded FIFO queues in POSIX shared memory.

    import zoldyq
    broker = zoldyq.create()            # or zoldyq.attach("ns") from any process
    q = broker.queue("emails")
    q.put({"to": "a@b.c"})
    msg = q.get(timeout=5.0)            # Message | None
"""

from zoldyq.api import Receipt
from zoldyq.errors import (
    AccessDenied,
    BackendUnavailable,
    BrokenError,
    ClosedError,
    ConfigError,
    InvalidName,
    InvalidPayload,
    LayoutMismatch,
    LeaseExpired,
    MessageTooLarge,
    NamespaceBusy,
    NamespaceNotFound,
    QueueBusy,
    QueueDeleted,
    QueueExists,
    QueueFull,
    QueueNotFound,
    StorageExhausted,
    TooManyQueues,
    ZoldyQError,
)
from zoldyq.shm.broker import Broker, Message, Queue, attach, create, destroy

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "BrokenError",
    "Broker",
    "ClosedError",
    "ConfigError",
    "InvalidName",
    "InvalidPayload",
    "LayoutMismatch",
    "LeaseExpired",
    "Message",
    "MessageTooLarge",
    "NamespaceBusy",
    "NamespaceNotFound",
    "Queue",
    "QueueBusy",
    "QueueDeleted",
    "QueueExists",
    "QueueFull",
    "QueueNotFound",
    "Receipt",
    "StorageExhausted",
    "TooManyQueues",
    "ZoldyQError",
    "attach",
    "create",
    "destroy",
]
