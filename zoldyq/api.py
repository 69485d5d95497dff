"""The interface every storage engine implements, and the values it trades in.

Transports (``http/``, ``ws/``), operations (``ops/``), the CLI and the client
SDK program against these protocols only; ``zoldyq.shm`` (one host, shared
memory) and ``zoldyq.redis`` (several hosts) implement them, and the HTTP
client implements them over the wire. An engine raises only the classes of
``zoldyq.errors``, so ``except zoldyq.QueueFull`` works whatever is behind a URL.

Delivery semantics, the same on every engine:

- a plain get is at-most-once: the message is gone once it is returned;
- a get with ``lease=S`` hides the message for S seconds; ``ack`` removes it,
  ``nack`` (optionally after ``delay``) and expiry give it back *at the head*,
  ahead of newer messages; after ``max_deliveries`` it moves to the queue's
  dead-letter queue instead;
- a put with ``delay``/``deliver_at`` stays invisible until due; ready, leased
  and delayed messages all count against the caps.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, runtime_checkable

from zoldyq.errors import InvalidName

KIND_JSON = 1  # payload bytes are one JSON document, stored as the client sent it
KIND_BYTES = 2  # payload bytes are opaque

#: Upper bounds (le, in seconds) of the latency histograms every engine keeps.
HIST_BOUNDS: tuple[float, ...] = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip

#: The largest caps any engine accepts (the shm ring's offsets and sequence numbers are 32-bit).
MAX_MESSAGES_LIMIT = 1 << 30
MAX_BYTES_LIMIT = (1 << 32) - 8
MAX_MESSAGE_BYTES_LIMIT = 64 << 20

DEFAULT_NAMESPACE = "zoldyq"
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_\-]{1,32}")  # it reaches POSIX names and key prefixes


def check_queue_name(name: object) -> str:
    """``name`` if it is a valid queue name; raises InvalidName.

    ``.`` and ``..`` are refused: they cannot stand as a path segment.
    """
    if isinstance(name, str) and _QUEUE_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    raise InvalidName(name)


def check_namespace(name: object) -> str:
    """``name`` if it is a valid namespace: no dots, at most 32 characters."""
    if isinstance(name, str) and _NAMESPACE.fullmatch(name):
        return name
    raise InvalidName(name, "namespace")


class Caps(NamedTuple):
    """A queue's limits."""

    max_messages: int
    max_bytes: int
    max_message_bytes: int


class Receipt(NamedTuple):
    """What a successful put returns."""

    queue_size: int
    enqueued_at: int  # µs since the epoch
    deliver_at: int | None = None  # µs since the epoch, for a delayed put


class QueueInfo(Protocol):
    """One queue as a listing shows it."""

    @property
    def name(self) -> str: ...
    @property
    def caps(self) -> Caps: ...
    @property
    def created_at(self) -> int: ...  # µs since the epoch


@runtime_checkable
class Message(Protocol):
    """One dequeued message."""

    @property
    def kind(self) -> int: ...
    @property
    def data(self) -> bytes: ...  # the stored bytes, exactly as put
    @property
    def payload(self) -> Any: ...  # decoded JSON, or bytes for a raw message
    @property
    def is_raw(self) -> bool: ...
    @property
    def enqueued_at(self) -> int: ...
    @property
    def queue_name(self) -> str: ...
    @property
    def lease_id(self) -> str | None: ...  # None for a plain get
    @property
    def delivery_count(self) -> int: ...  # 1 on first delivery
    @property
    def lease_expires_at(self) -> int | None: ...  # µs since the epoch
    def ack(self) -> None: ...
    def nack(self, delay: float = 0.0) -> str | None: ...
    def extend(self, seconds: float) -> int: ...


@runtime_checkable
class Queue(Protocol):
    """A named queue; thread-safe."""

    name: str

    @property
    def broker(self) -> Broker: ...  # the namespace it belongs to
    def put(self, payload: Any, *, delay: float | None = None,
            deliver_at: int | None = None) -> Receipt: ...
    def put_bytes(self, data: bytes, *, delay: float | None = None,
                  deliver_at: int | None = None) -> Receipt: ...
    def put_many(self, payloads: Iterable[Any], *, delay: float | None = None,
                 deliver_at: int | None = None) -> Receipt: ...
    def put_records(self, records: list[tuple[int, bytes]], *,
                    deliver_at: int | None = None) -> Receipt: ...
    def get(self, timeout: float = 0.0, lease: float | None = None) -> Message | None: ...
    def get_many(self, max: int = 100, timeout: float = 0.0,
                 lease: float | None = None) -> Sequence[Message]: ...
    def peek(self, max: int | None = None) -> Sequence[Message]: ...
    def stream(self, timeout: float | None = None,
               lease: float | None = None) -> Iterator[Message]: ...
    async def aget(self, timeout: float = 0.0, lease: float | None = None) -> Message | None: ...
    async def aget_many(self, max: int = 100, timeout: float = 0.0,
                        lease: float | None = None) -> Sequence[Message]: ...
    def astream(self, lease: float | None = None) -> AsyncIterator[Message]: ...
    def ack(self, lease_id: str) -> None: ...  # LeaseExpired if not held
    def ack_many(self, lease_ids: Iterable[str]) -> list[str]: ...  # the ids not held
    def nack(self, lease_id: str, delay: float = 0.0) -> str | None: ...  # DLQ name if moved
    def extend(self, lease_id: str, seconds: float) -> int: ...  # new lease_expires_at µs
    def lease(self, seconds: float,
              timeout: float = 0.0) -> AbstractContextManager[Message | None]: ...
    def requeue(self, messages: Iterable[Message]) -> int: ...  # back at the head, in order
    def redrive(self) -> int: ...  # on a DLQ: back to the original queues
    def stats(self) -> dict[str, Any]: ...
    def clear(self) -> int: ...
    def delete(self) -> None: ...
    def __len__(self) -> int: ...


@runtime_checkable
class Counters(Protocol):
    """Process-level figures shared by every front end of a namespace."""

    def add(self, key: str, n: int = 1) -> None: ...
    def set(self, key: str, value: int) -> None: ...
    def items(self) -> dict[str, int]: ...
    def close(self) -> None: ...


@runtime_checkable
class Broker(Protocol):
    """One process's handle on one namespace of one engine."""

    namespace: str
    interrupted: bool

    @property
    def defaults(self) -> Caps: ...
    @property
    def max_queues(self) -> int: ...
    def queue(self, name: str) -> Queue: ...
    def create_queue(self, name: str, *, max_messages: int | None = None,
                     max_bytes: int | None = None, max_message_bytes: int | None = None,
                     max_deliveries: int | None = None, dead_letter_queue: str | None = None,
                     exist_ok: bool = False) -> Queue: ...
    def delete(self, name: str) -> None: ...
    def queues(self) -> list[str]: ...
    def entries(self) -> Sequence[QueueInfo]: ...
    def exists(self, name: str) -> bool: ...
    def interrupt(self) -> None: ...
    def close(self) -> None: ...
    # what operations read
    @property
    def created_at(self) -> int: ...  # µs since the epoch
    @property
    def destroyed(self) -> bool: ...
    def counters(self, create: bool = True) -> Counters: ...
    def free_bytes(self) -> int | None: ...
    def bytes_needed(self, sizes: Sequence[int], *, appended: bool) -> int: ...
    def locks(self) -> Iterator[tuple[str, AbstractContextManager[object]]]: ...
    def __enter__(self) -> Broker: ...
    def __exit__(self, *exc: object) -> None: ...
