"""Records as the scripts store them, and the Message handed to callers.

A record is a 22-byte big-endian header (seq u64, enqueued_at u64 µs,
delivery_count u32, kind u8, origin length u8), the origin queue's name (dead
letters only), then the payload exactly as it was put.
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, Any

import orjson

from zoldyq.api import KIND_BYTES

if TYPE_CHECKING:
    from zoldyq.redis.broker import Queue

HEADER = struct.Struct(">QQIBB")


class Message:
    """One dequeued message; ``lease_id`` is set when it was taken with a lease."""

    __slots__ = (
        "__dict__", "_queue", "data", "delivery_count", "enqueued_at", "kind",
        "lease_expires_at", "lease_id", "origin", "queue_size", "record",
    )  # fmt: skip
    record: bytes
    kind: int
    data: bytes
    enqueued_at: int
    delivery_count: int
    origin: str | None
    lease_id: str | None
    lease_expires_at: int | None
    queue_size: int | None  # the queue's size right after the get that took it

    def __init__(self, queue: Queue, record: bytes, lease_id: str | None, expires: int | None):
        _, enq, count, kind, olen = HEADER.unpack_from(record)
        self.record = record
        self.kind = kind
        self.data = record[HEADER.size + olen :]
        self.enqueued_at = enq
        self.delivery_count = count if lease_id else count + 1  # a plain get is a delivery too
        self.origin = record[HEADER.size : HEADER.size + olen].decode() if olen else None
        self.lease_id = lease_id
        self.lease_expires_at = expires
        self.queue_size = None
        self._queue = queue

    @property
    def queue_name(self) -> str:
        return self._queue.name

    @property
    def is_raw(self) -> bool:
        return self.kind == KIND_BYTES

    @functools.cached_property
    def payload(self) -> Any:
        return self.data if self.kind == KIND_BYTES else orjson.loads(self.data)

    def ack(self) -> None:
        self._queue.ack(self._lease())

    def nack(self, delay: float = 0.0) -> str | None:
        return self._queue.nack(self._lease(), delay)

    def extend(self, seconds: float) -> int:
        expires = self.lease_expires_at = self._queue.extend(self._lease(), seconds)
        return expires

    def _lease(self) -> str:
        if self.lease_id is None:
            raise ValueError("this message was taken without a lease")
        return self.lease_id

    def __repr__(self) -> str:
        lease = f", lease_id={self.lease_id!r}" if self.lease_id else ""
        return (
            f"Message({self.queue_name!r}, {self.payload!r}, "
            f"enqueued_at={self.enqueued_at}{lease})"
        )
