"""The WebSocket wire format, as pure functions over bytes (no sockets, no queues).

Enqueue stream, client -> server:
    text frame    ``{"payload": <json>}``  stored as JSON (other keys are ignored);
                  ``"delay": s`` or ``"deliver_at": µs`` hide it until then
    binary frame  raw bytes                 stored as-is (``Message.is_raw``)
server -> client, one answer per frame, in order:
    ``{"queued":true,"queue_name":..,"queue_size":..,"enqueued_at":..}``
    ``{"error":"queue_full"|"message_too_large"|"bad_request"|..,"message":..,...}``

Dequeue stream, server -> client:
    text frame    ``{"payload":<json>,"queue_name":..,"enqueued_at":..}`` per JSON message
    binary frame  the raw bytes of a raw message

Leased dequeue stream (``?lease=S&prefetch=N``), server -> client: every message
is a text frame with ``"lease_id"``, ``"delivery_count"`` and ``"lease_expires_at"``
(a raw one carries ``"payload"`` as base64 with ``"encoding":"base64"``); client ->
server: ``{"ack": id}``, ``{"nack": id, "delay": s}``, ``{"extend": id, "lease": s}``,
answered only by ``{"extended": id, "lease_expires_at": ..}`` or an error frame.

A text frame's payload is stored as the exact bytes the client sent (numbers
are never rewritten), and frames are built by concatenating the stored JSON
bytes: a payload is never decoded and re-encoded. Queue names need no escaping
(``[A-Za-z0-9_.-]``).
"""

from __future__ import annotations

import base64
import struct

import orjson

from zoldyq.api import KIND_BYTES, KIND_JSON, MAX_DELIVER_AT, Message, json_field
from zoldyq.errors import BadFrame, InvalidPayload, ZoldyQError

_loads = orjson.loads
_dumps = orjson.dumps
_JSONDecodeError = orjson.JSONDecodeError

# A text frame may exceed the payload limit by this much (the ``{"payload":...}``
# envelope and some whitespace) before the connection is closed with 1009.
ENVELOPE_BYTES = 1024


MAX_SECONDS = 366 * 86_400.0


def seconds(value: object, what: str, positive: bool = False) -> float:
    """A number of seconds (0 up to a year; above 0 if ``positive``); BadFrame if not."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            0 <= value <= MAX_SECONDS) or (positive and value == 0):
        raise BadFrame(f"{what} must be a number of seconds from 0 to {MAX_SECONDS:g}")
    return float(value)


def deliver_at(obj: dict[str, object], now_us: int) -> int | None:
    """When a frame's message becomes visible (µs): the later of ``delay`` and
    ``deliver_at``, as over HTTP; both are checked when both are sent."""
    due = now_us + int(seconds(obj["delay"], "delay") * 1e6) if "delay" in obj else 0
    if "deliver_at" in obj:
        at = obj["deliver_at"]
        if isinstance(at, bool) or not isinstance(at, int) or not 0 <= at <= MAX_DELIVER_AT:
            raise BadFrame("deliver_at must be µs since the epoch")
        due = max(due, at)
    return due if due > now_us else None


def parse_enqueue(frame: str | bytes) -> tuple[int, bytes]:
    """The (kind, data) record one client frame asks to enqueue.

    Raises:
        BadFrame: the text frame is not a JSON object with a ``payload`` key, or
            the payload is nested too deep to store.
    """
    return parse_frame(frame, 0)[0]


def parse_frame(frame: str | bytes, now_us: int) -> tuple[tuple[int, bytes], int | None]:
    """``parse_enqueue``, plus when the message becomes visible (None: now)."""
    if type(frame) is bytes:
        return (KIND_BYTES, frame), None
    try:
        obj, raw = json_field(frame, "payload")
    except _JSONDecodeError as ex:
        raise BadFrame(f"frame is not valid JSON: {ex}") from None
    except InvalidPayload as ex:
        raise BadFrame(f"payload cannot be stored: {ex}") from None
    if raw is None:
        raise BadFrame('a text frame must be a JSON object {"payload": <value>}')
    at = deliver_at(obj, now_us) if now_us and len(obj) > 1 else None
    return (KIND_JSON, raw), at


def parse_control(frame: str | bytes) -> tuple[str, str, float]:
    """(op, lease id, seconds) of a leased stream's client frame: ack, nack or extend."""
    try:
        obj = _loads(frame)
    except _JSONDecodeError as ex:
        raise BadFrame(f"frame is not valid JSON: {ex}") from None
    if type(obj) is dict:
        for op, key in (("ack", None), ("nack", "delay"), ("extend", "lease")):
            lease_id = obj.get(op)
            if isinstance(lease_id, str) and 0 < len(lease_id) <= 64:
                if key is None:
                    return op, lease_id, 0.0
                if op == "extend":
                    return op, lease_id, seconds(obj.get(key), "lease", positive=True)
                return op, lease_id, seconds(obj.get(key, 0), "delay")
    raise BadFrame('send {"ack": id}, {"nack": id, "delay": s} or {"extend": id, "lease": s}')


def leased_message(queue_name: str, m: Message) -> bytes:
    """The text frame of one leased message (raw payloads as base64)."""
    if m.kind == KIND_BYTES:
        head = b'{"payload":"%s","encoding":"base64"' % base64.b64encode(m.data)
    else:
        head = b'{"payload":%s' % m.data
    return b'%s,"queue_name":"%s","enqueued_at":%d,"lease_id":"%s","delivery_count":%d,' \
        b'"lease_expires_at":%d}' % (head, queue_name.encode(), m.enqueued_at,
                                     (m.lease_id or "").encode(), m.delivery_count,
                                     m.lease_expires_at or 0)


def ack_prefix(queue_name: str) -> bytes:
    return b'{"queued":true,"queue_name":"' + queue_name.encode() + b'","queue_size":'


def ack(prefix: bytes, queue_size: int, enqueued_at: int) -> bytes:
    """The confirmation of one enqueued frame (``prefix`` from ``ack_prefix``)."""
    return b"%b%d,\"enqueued_at\":%d}" % (prefix, queue_size, enqueued_at)


def error(ex: ZoldyQError) -> bytes:
    """The error frame answering one rejected frame."""
    code = "bad_request" if isinstance(ex, InvalidPayload) else ex.code
    return _dumps({"error": code, "message": str(ex), **ex.fields()})


def message_prefix(queue_name: str) -> tuple[bytes, bytes]:
    """The constant parts around a dequeued payload: (before, between payload and time)."""
    return b'{"payload":', b',"queue_name":"' + queue_name.encode() + b'","enqueued_at":'


def message(before: bytes, middle: bytes, data: bytes, enqueued_at: int) -> bytes:
    """The text frame carrying one dequeued JSON message."""
    return b"%b%b%b%d}" % (before, data, middle, enqueued_at)


_HEAD16 = struct.Struct("!BBH").pack
_HEAD64 = struct.Struct("!BBQ").pack


def wire(out: list[bytes], binary: bool | list[bool] = False) -> bytes:
    """RFC 6455 server frames (final, unmasked, no extension) for each of ``out``, joined.

    ``binary``: all frames binary (True), all text (False), or one flag per frame.
    What ``websockets`` writes for ``send`` without compression, built 3-4x
    faster, so that a batch of messages costs one header each and one write.
    """
    ops = [0x82 if b else 0x81 for b in binary] if isinstance(binary, list) else None
    op = 0x82 if binary is True else 0x81
    parts = []
    for i, data in enumerate(out):
        if ops is not None:
            op = ops[i]
        n = len(data)
        if n < 126:
            parts.append(bytes((op, n)))
        elif n < 65536:
            parts.append(_HEAD16(op, 126, n))
        else:
            parts.append(_HEAD64(op, 127, n))
        parts.append(data)
    return b"".join(parts)


def close_reason(code: str, text: str) -> str:
    """A close reason ``"<code>: <sentence>"`` cut to the 123 bytes a close frame allows."""
    reason = f"{code}: {text}"
    raw = reason.encode()
    if len(raw) <= 123:
        return reason
    return raw[:120].decode(errors="ignore") + "..."
