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
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI, WebSocketException
from websockets.sync.client import connect

from zoldyq.api import KIND_BYTES, KIND_JSON
from zoldyq.client.wire import backoff
from zoldyq.errors import RequestError

if TYPE_CHECKING:
    from zoldyq.client.broker import Message, Queue

POLL = 1.0  # seconds between looks at the idle deadline and interrupt()
MAX_FRAME = 64 << 20
_DROPPED = (ConnectionClosed, OSError, TimeoutError, WebSocketException)


def _target(queue: Queue, lease: float | None) -> str:
    base = queue.broker.ws_url
    assert base
    path = f"{base.rstrip('/')}/queues/{urllib.parse.quote(queue.name, safe='')}/dequeue"
    return path + (f"?lease={lease:g}" if lease is not None else "")


def _headers(queue: Queue) -> dict[str, str]:
    return dict(queue.broker.wire.headers)


def _message(queue: Queue, frame: str | bytes) -> Message:
    from zoldyq.client.broker import Message

    if isinstance(frame, bytes):
        return Message(queue, KIND_BYTES, frame, frame, 0)
    doc: dict[str, Any] = orjson.loads(frame)
    if "error" in doc and "payload" not in doc:
        raise RequestError(400, str(doc["error"]), str(doc.get("message", "")))
    return Message(queue, KIND_JSON, doc["payload"], None, int(doc.get("enqueued_at", 0)), doc)


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
                while not broker.interrupted:
                    wait = POLL if idle_until is None else min(POLL, idle_until - time.monotonic())
                    if wait <= 0:
                        return
                    try:
                        frame = ws.recv(timeout=wait)
                    except TimeoutError:
                        continue
                    attempt = 0
                    msg = _message(queue, frame)
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
                while not broker.interrupted:
                    try:
                        frame = await asyncio.wait_for(ws.recv(), POLL)
                    except TimeoutError:
                        continue
                    attempt = 0
                    yield _message(queue, frame)
        except InvalidStatus as ex:
            if ex.response.status_code < 500:
                raise _refused(queue, ex) from None
        except InvalidURI:
            raise
        except _DROPPED:
            pass
        await asyncio.sleep(backoff(attempt, None) + 0.05)
        attempt = min(attempt + 1, 8)
