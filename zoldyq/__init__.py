"""ZoldyQ: named, bounded FIFO queues in POSIX shared memory.

    import zoldyq
    broker = zoldyq.connect()           # shm: (this host), http://host:9000, redis://...
    q = broker.queue("emails")
    q.put({"to": "a@b.c"})
    msg = q.get(timeout=5.0)            # Message | None
"""

from importlib import metadata as _metadata

from zoldyq.api import Receipt
from zoldyq.connect import connect
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
    RequestError,
    StorageExhausted,
    TooManyQueues,
    ZoldyQError,
)
from zoldyq.shm.broker import Broker, Message, Queue, attach, create, destroy

try:
    __version__ = _metadata.version("zoldyq")
except _metadata.PackageNotFoundError:  # a checkout not installed
    __version__ = "0+unknown"

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
    "RequestError",
    "StorageExhausted",
    "TooManyQueues",
    "ZoldyQError",
    "__version__",
    "attach",
    "connect",
    "create",
    "destroy",
]
