"""ZoldyQ: named, bounded FIFO queues in POSIX shared memory.

    import zoldyq
    broker = zoldyq.connect()           # shm: (this host), http://host:9000, redis://...
    q = broker.queue("emails")
    q.put({"to": "a@b.c"})
    msg = q.get(timeout=5.0)            # Message | None
"""

from typing import Any as _Any

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


def __getattr__(name: str) -> _Any:
    """``__version__`` on first use: importlib.metadata costs every server process ~2 MB."""
    if name != "__version__":
        raise AttributeError(f"module 'zoldyq' has no attribute {name!r}")
    from importlib import metadata

    try:
        version = metadata.version("zoldyq")
    except metadata.PackageNotFoundError:  # a checkout not installed
        version = "0+unknown"
    globals()["__version__"] = version
    return version

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
