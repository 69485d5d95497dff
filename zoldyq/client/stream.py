"""``stream``/``astream`` of the HTTP client: the server's WebSocket dequeue stream.

The connection is reopened with full-jitter backoff whenever it drops (a
restarted server, a sidecar killed and restarted by its launcher), so a
consumer loop outlives the server's restarts. A server that says nothing of a
WebSocket port (``/info``) is streamed with long-polls instead.

A plain stream is at-most-once like any plain get: what the server wrote to a
connection that broke before this client read it is gone. With ``lease=`` it
is at-least-once: an unread message comes back when its lease ends.
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import connect

from zoldyq.api import KIND_BYTES, KIND_JSON
from zoldyq.client.wire import backoff

if TYPE_CHECKING:
    from zoldyq.client.broker import Message, Queue

#: Sends a settle frame (``{"ack": id}``, ``{"nack": id, "delay": s}``) on the stream's
#: connection: a leased stream's credit comes back only from its own frames.
Settle = Callable[[bytes], None]

POLL = 1.0  # seconds between looks at the idle deadline and interrupt()
MAX_FRAME = 64 << 20
PREFETCH = 10  # unacked leased messages in flight on one stream
_DROPPED = (ConnectionClosed, OSError, TimeoutError, WebSocketException)


def _target(queue: Queue, lease: float | None) -> str:
    base = queue.broker.ws_url
    assert base
    path = f"{base.rstrip('/')}/queues/{urllib.parse.quote(queue.name, safe='')}/dequeue"
    return path + (f"?lease={lease:g}&prefetch={PREFETCH}" if lease is not None else "")


def _headers(queue: Queue) -> dict[str, str]:
    return dict(queue.broker.wire.headers)


def _message(queue: Queue, frame: str | bytes, settle: Settle | None = None
             ) -> Message | None:
    """The message a frame carries; None for the server's answers to settle frames."""
    from zoldyq.client.broker import Message

    if isinstance(frame, bytes):
        return Message(queue, KIND_BYTES, frame, frame, 0)
    doc: dict[str, Any] = orjson.loads(frame)
    if "payload" not in doc:
        return None  # {"extended": ...} or an error about a lease: the HTTP call says it
    at = int(doc.get("enqueued_at", 0))
    if doc.get("encoding") == "base64":
        data = base64.b64decode(doc["payload"])
        m = Message(queue, KIND_BYTES, data, data, at, doc)
    else:
        m = Message(queue, KIND_JSON, doc["payload"], None, at, doc)
    m.settle = settle
    return m


def _refused(queue: Queue, ex: InvalidStatus) -> Exception:
    """A handshake the sidecar answered with an error status (401, 403, 404...)."""
    from zoldyq.client.wire import error

    r = ex.response

    class _R:  # what wire.error reads of an httpx.Response
        status_code = r.status_code
        reason_phrase = r.reason_phrase
        content = r.body or b""
        headers = dict(r.headers.raw_items())

    return error(_R(), queue.name)  # type: ignore[arg-type]


def sync_stream(queue: Queue, timeout: float | None, lease: float | None) -> Iterator[Message]:
    broker = queue.broker
    idle_until = None if timeout is None else time.monotonic() + timeout
    if not broker.ws_url:
        yield from _polled(queue, timeout, lease)
        return
    attempt = 0
    while not broker.interrupted:
        try:
            with connect(_target(queue, lease), additional_headers=_headers(queue),
                         max_size=MAX_FRAME, open_timeout=10) as ws:
                settle = None if lease is None else _sender(ws)
                while not broker.interrupted:
                    wait = POLL if idle_until is None else min(POLL, idle_until - time.monotonic())
                    if wait <= 0:
                        return
                    try:
                        frame = ws.recv(timeout=wait)
                    except TimeoutError:
                        continue
                    attempt = 0
                    msg = _message(queue, frame, settle)
                    if msg is None:
                        continue
                    yield msg
                    if idle_until is not None:
                        idle_until = time.monotonic() + timeout  # type: ignore[operator]
        except InvalidStatus as ex:
            if ex.response.status_code < 500:
                raise _refused(queue, ex) from None
        except InvalidURI:
            raise
        except _DROPPED:
            pass
        if idle_until is not None and time.monotonic() >= idle_until:
            return
        time.sleep(backoff(attempt, None) + 0.05)
        attempt = min(attempt + 1, 8)


def _polled(queue: Queue, timeout: float | None, lease: float | None) -> Iterator[Message]:
    idle_until = None if timeout is None else time.monotonic() + timeout
    while not queue.broker.interrupted:
        wait = POLL if idle_until is None else min(POLL, idle_until - time.monotonic())
        if wait <= 0:
            return
        for msg in queue.get_many(100, wait, lease):
            if idle_until is not None:
                idle_until = time.monotonic() + timeout  # type: ignore[operator]
            yield msg


def _sender(ws: Any) -> Settle:
    return lambda frame: ws.send(frame.decode())  # thread-safe in websockets' sync client


def _scheduler(ws: Any) -> Settle:
    """``Message.ack()`` is called from the loop's own thread: send without blocking it."""
    tasks: set[asyncio.Task[None]] = set()

    def settle(frame: bytes) -> None:
        task = asyncio.get_running_loop().create_task(ws.send(frame.decode()))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return settle


async def async_stream(queue: Queue, lease: float | None) -> AsyncIterator[Message]:
    broker = queue.broker
    if not await asyncio.to_thread(lambda: broker.ws_url):  # /info once, off the loop
        while not broker.interrupted:
            for msg in await queue.aget_many(100, POLL, lease):
                yield msg
        return
    attempt = 0
    while not broker.interrupted:
        try:
            async with aconnect(_target(queue, lease), additional_headers=_headers(queue),
                                max_size=MAX_FRAME, open_timeout=10) as ws:
                settle = None if lease is None else _scheduler(ws)
                while not broker.interrupted:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), POLL)
                    except TimeoutError:
                        continue
                    attempt = 0
                    got = _message(queue, frame, settle)
                    if got is not None:
                        yield got
        except InvalidStatus as ex:
            if ex.response.status_code < 500:
                raise _refused(queue, ex) from None
        except InvalidURI:
            raise
        except _DROPPED:
            pass
        await asyncio.sleep(backoff(attempt, None) + 0.05)
        attempt = min(attempt + 1, 8)
