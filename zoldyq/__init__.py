"""ZoldyQ: named, bounded FIFO queues in POSIX shared memory.

    import zoldyq
    broker = zoldyq.create()            # or zoldyq.attach("ns") from any process
    q = broker.queue("emails")
    q.put({"to": "a@b.c"})
    msg = q.get(timeout=5.0)            # Message | None
"""

from zoldyq.errors import (
    AccessDenied,
    BrokenError,
    ClosedError,
    ConfigError,
    InvalidName,
    InvalidPayload,
    LayoutMismatch,
    MessageTooLarge,
    NamespaceNotFound,
    QueueDeleted,
    QueueExists,
    QueueFull,
    QueueNotFound,
    StorageExhausted,
    TooManyQueues,
    ZoldyQError,
)
from zoldyq.shm.broker import Broker, Message, Queue, Receipt, attach, create, destroy

__all__ = [
    "AccessDenied",
    "BrokenError",
    "Broker",
    "ClosedError",
    "ConfigError",
    "InvalidName",
    "InvalidPayload",
    "LayoutMismatch",
    "Message",
    "MessageTooLarge",
    "NamespaceNotFound",
    "Queue",
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
