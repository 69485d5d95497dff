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

import contextlib
import json
import re
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol, runtime_checkable
from urllib.parse import urlsplit

import orjson

from zoldyq.errors import InvalidName, InvalidPayload, ZoldyQError

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
MAX_DELIVER_AT = 1 << 62  # µs since the epoch: far beyond any real date

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


# -- JSON envelopes: the exact bytes a client sent -------------------------------------
#
# A transport gets a payload inside an envelope (``{"payload": <json>}``) and
# stores the payload's own bytes, as sent: decoding and re-encoding would
# rewrite numbers (orjson reads 123456789012345678901234567890 as a float).
# orjson validates the whole document; the stdlib's scanner finds the spans.

_HEAD = re.compile(rb'\s*\{\s*"([A-Za-z_]+)"\s*:')
# one match per structural character, the text before it (strings included) skipped
_STRUCTURE = re.compile(rb'[^"\[\]{},]*(?:"[^"\\]*(?:\\.[^"\\]*)*"[^"\[\]{},]*)*([\[\]{},])')
_WS = re.compile(r"[ \t\n\r]*")
# the only escapes that can spell a key of ASCII letters and "_" (non-ASCII ones cannot)
_LETTER_ESCAPE = re.compile(rb"\\u00[4-7]")
_scanner = json.JSONDecoder()
_loads = orjson.loads


class CheckedRecords(list[tuple[int, bytes]]):
    """Records whose JSON ones are known to be one JSON document each (they came from
    ``json_field``/``json_items``): ``put_records`` need not parse them again."""

    __slots__ = ()


def json_field(body: bytes | str, key: str) -> tuple[Any, bytes | None]:
    """(document, the exact bytes of its member ``key``, or None if it is not an object
    with that member). Raises orjson.JSONDecodeError if ``body`` is not JSON."""
    doc = orjson.loads(body)
    if type(doc) is not dict or key not in doc:
        return doc, None
    raw = body.encode() if isinstance(body, str) else body
    name = key.encode()
    compact = b'{"%b":' % name
    if raw.startswith(compact):  # the usual shape: no regex needed
        start = len(compact)
    else:
        m = _HEAD.match(raw)
        start = m.end() if m is not None and m.group(1) == name else -1
    if len(doc) == 1 and start > 0:
        value = raw.rstrip()[start:-1].strip()  # the only member: between ':' and '}'
        # a duplicate key would leave a top-level comma in it: look only if one may exist,
        # spelled as is or with an escape of an ASCII letter ("p\u0061yload")
        if b'"%b"' % name not in value and (b"\\" not in value
                                            or not _LETTER_ESCAPE.search(value)):
            return doc, value
        try:
            orjson.loads(value)
            return doc, value
        except orjson.JSONDecodeError:
            pass
    return doc, _member_span(raw.decode(), key).encode()


def json_items(array: bytes, parsed: list[Any] | None = None) -> list[bytes]:
    """The exact bytes of each element of a JSON array (one that already parsed).

    With ``parsed`` (the array as orjson read it) two fast paths come first:
    the separators clients write (``, `` or ``,`` between values, ``}, {`` or
    ``},{`` between objects), if splitting at them gives as many pieces as
    elements and each piece is one JSON document (then they are the elements:
    the grammar has one parse); or, for a compact array, orjson writing it back
    byte for byte. Otherwise strings and structure are scanned: a comma at
    depth 1 ends an element.
    """
    if parsed is not None:
        split = _split_at_separators(array, len(parsed))
        if split is not None:
            return split
        try:
            encoded = [orjson.dumps(item) for item in parsed]
        except TypeError:  # an integer orjson read but cannot write: scan instead
            encoded = None
        if encoded is not None and b"[%b]" % b",".join(encoded) == array:
            return encoded
    out: list[bytes] = []
    depth, start = 0, 0
    for m in _STRUCTURE.finditer(array):
        at = m.start(1)
        c = array[at]
        if c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth == 1:
                start = at + 1
        elif c == 0x5D or c == 0x7D:  # ] }
            if depth == 1:
                last = array[start:at].strip()
                if last:
                    out.append(last)
                break
            depth -= 1
        elif depth == 1:  # a comma between elements
            out.append(array[start:at].strip())
            start = at + 1
    return out


_SEPARATORS = ((b"}, {", True), (b"},{", True), (b", ", False), (b",", False))


def _split_at_separators(array: bytes, n: int) -> list[bytes] | None:
    """``json_items`` by ``bytes.split`` at a usual separator, or None."""
    inner = array.strip()[1:-1]
    if n < 2:  # the array parsed: all between its brackets is its element, if any
        return [inner.strip()] if n else []
    for sep, braces in _SEPARATORS:
        if inner.count(sep) != n - 1:
            continue
        parts = inner.split(sep)
        if braces:  # give each object back the braces the separator took
            parts = [parts[0] + b"}", *(b"{%b}" % p for p in parts[1:-1]), b"{" + parts[-1]]
        try:
            for p in parts:
                _loads(p)
        except orjson.JSONDecodeError:
            continue
        return [p.strip() for p in parts]
    return None


def _member_span(text: str, key: str) -> str:
    """The text of the last member ``key`` of the JSON object ``text`` (orjson's choice)."""
    i = _WS.match(text, 0).end() + 1  # type: ignore[union-attr]
    found = ""
    while True:
        i = _WS.match(text, i).end()  # type: ignore[union-attr]
        if text[i] == "}":
            return found
        name, i = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]
        i = _WS.match(text, _WS.match(text, i).end() + 1).end()  # type: ignore[union-attr]
        end = _scan_end(text, i)
        if name == key:
            found = text[i:end]
        i = _WS.match(text, end).end()  # type: ignore[union-attr]
        if text[i] == ",":
            i += 1


def _scan_end(text: str, i: int) -> int:
    try:
        return int(_scanner.raw_decode(text, i)[1])
    except RecursionError:
        raise InvalidPayload("nested too deep to store") from None


def check_json(data: bytes) -> None:
    """Raises InvalidPayload unless ``data`` is one JSON document (what KIND_JSON holds)."""
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError as ex:
        raise InvalidPayload(str(ex)) from None


# -- Origins: which web pages may use the API from a browser -----------------------------


def parse_origins(*settings: str | None) -> frozenset[str]:
    """The allowed Origins of comma-separated settings, normalised (``*``: any)."""
    return frozenset(o.strip().lower().rstrip("/") for text in settings if text
                     for o in text.split(",") if o.strip())


def origin_allowed(origin: str | None, host: str | None, own_ports: Collection[int],
                   allowed: Collection[str]) -> bool:
    """Whether a request carrying this ``Origin`` header may go on.

    Yes without an Origin (not a browser: curl, SDKs, which could forge one
    anyway), for a listed one, and for the server's own: the host the request
    was sent to (its ``Host``, so a reverse proxy's public name works too), on
    that port or one of the server's (a page from the HTTP port may open a
    stream on the WebSocket port). A page elsewhere could otherwise make a
    visitor's browser write to (or drain) the broker with a simple request,
    which needs no CORS preflight.
    """
    if origin is None:
        return True
    norm = origin.strip().lower().rstrip("/")
    if norm in allowed or "*" in allowed:
        return True
    try:
        url, to = urlsplit(norm), urlsplit("//" + (host or "").strip().lower())
        default = 443 if url.scheme in ("https", "wss") else 80
        port, host_port = url.port or default, to.port or default
    except ValueError:
        return False
    return (url.scheme in ("http", "https", "ws", "wss") and url.hostname is not None
            and url.hostname == to.hostname and (port == host_port or port in own_ports))


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


class LeaseBlock:
    """``with q.lease(seconds) as msg:``, the same on every engine (a mixin of their Queues)."""

    def get(self, timeout: float = 0.0, lease: float | None = None) -> Any: ...

    @contextlib.contextmanager
    def lease(self, seconds: float, timeout: float = 0.0) -> Iterator[Any]:
        """A leased message, or None when nothing came within ``timeout``: acked when the
        block succeeds, nacked (back at the head, or to the DLQ) when it raises. A nack that
        fails (the lease ran out, the broker is unreachable) leaves the lease to expire,
        which gives the message back too: the block's own exception is what propagates."""
        msg = self.get(timeout, lease=seconds)
        if msg is None:
            yield None
            return
        try:
            yield msg
        except BaseException:
            with contextlib.suppress(ZoldyQError):
                msg.nack()
            raise
        msg.ack()


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


class RemoteQueue(Queue, Protocol):
    """A queue of an engine behind a network round trip (``Broker.remote``): its puts
    can be awaited too, so an event loop serves other requests meanwhile."""

    async def aput_records(self, records: list[tuple[int, bytes]], *,
                           deliver_at: int | None = None) -> Receipt: ...


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
