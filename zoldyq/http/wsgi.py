"""The API as a WSGI ``falcon.App``, for gunicorn's gthread worker.

A gthread worker serves each request on one of a fixed pool of threads, and
a long-poll holds its thread while it waits. So at most ``threads - spare``
long-polls wait at once per worker (``spare`` = a quarter of the threads, at
least 2): the spare threads keep enqueue and ``/health`` answering however
many consumers are parked. A long-poll beyond that bound does not wait: it
is answered at once (a message, or 204 with ``Retry-After: 1``).

A request waits at most ``LOCK_WAIT`` for a lock held by another process (one
stopped with it would otherwise hold a thread for as long), then gets 503
``queue_busy``; a long-poll's wait for messages is not counted.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import falcon
from gunicorn.http.errors import ParseException

from zoldyq import api
from zoldyq.broker import LOCK_WAIT, LockBusy, patient, wait_until
from zoldyq.errors import QueueBusy, RequestError
from zoldyq.http import core, ops, skeleton
from zoldyq.http.errors import body_too_large, complete
from zoldyq.http.routes import WAITING, Route

CHUNK = 64 << 10
SLICE = 1.0  # a parked long-poll looks at its client this often (each slice counts a timeout)


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, refused (413) before reading when Content-Length says too big,
    or as soon as a chunked body passes ``limit``."""
    size = req.content_length
    if size is not None:
        if size > limit:
            raise body_too_large(size, limit)
        return complete(req.bounded_stream.read(), size) if size else b""
    chunks, total = [], 0
    try:
        while chunk := req.stream.read(CHUNK):
            total += len(chunk)
            if total > limit:
                raise body_too_large(None, limit)
            chunks.append(chunk)
    except (OSError, ParseException):  # gunicorn's chunked reader: cut short or malformed
        raise RequestError(400, "incomplete_body", f"request body ended after {total} "
                           "bytes, before its last chunk") from None
    return b"".join(chunks)


def long_poll_slots(threads: int) -> int:
    return max(1, threads - max(2, threads // 4))


def client_gone(sock: socket.socket | None) -> bool:
    """The client closed its end: readable, and a peek reads end-of-file."""
    if sock is None:
        return False
    try:
        if not select.select([sock], [], [], 0)[0]:
            return False
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


def _take_for(w: core.Wait, sock: socket.socket | None) -> Sequence[api.Message] | None:
    """Wait in slices, looking at the client between them; None if it left (and then
    whatever was taken is back at the head)."""
    deadline = time.monotonic() + w.timeout
    while True:
        slice_end = min(time.monotonic() + SLICE, deadline)
        msgs = w.take(max(0.0, slice_end - time.monotonic()))
        if client_gone(sock):
            w.give_back(msgs)
            return None
        now = time.monotonic()
        if msgs or now >= deadline or now < slice_end - 0.05:  # early and empty: interrupted
            return msgs


def wait(w: core.Wait, slots: threading.Semaphore, sock: socket.socket | None = None
         ) -> core.Reply:
    """Park this thread only while a long-poll slot is free; else answer at once."""
    if w.timeout > 0 and slots.acquire(blocking=False):
        try:
            msgs = _take_for(w, sock)
            return core.NO_CONTENT if msgs is None else w.reply(msgs)
        finally:
            slots.release()
    reply = w.reply(w.take(0))
    if w.timeout > 0 and reply.status == 204:
        reply = reply._replace(headers={"Retry-After": "1"})
    return reply


def _responder(ctx: core.Ctx, route: Route, slots: threading.Semaphore) -> Callable[..., None]:
    handler, waits, needs_body = route.handler, route.kind == WAITING, route.body
    several = route.name in skeleton.SEVERAL_LOCKS
    limit = ctx.max_timeout if waits else 0.0
    count = ops.counter(ctx, route.name)

    def respond(req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        try:
            skeleton.authorize(ctx, route, req)
            body = read_body(req, ctx.max_body) if needs_body else b""
            with patient() if several else wait_until(time.monotonic() + LOCK_WAIT + limit):
                try:
                    out = handler(ctx, skeleton.call(req, body), **params)
                    reply = wait(out, slots, req.env.get("gunicorn.socket")) if waits else out
                except LockBusy:
                    raise QueueBusy(params.get("name", ""), LOCK_WAIT) from None
        except Exception as ex:
            reply = skeleton.failure(ex, req.method, req.path)
        skeleton.answer(count, req, resp, reply)

    return respond


def create(ctx: core.Ctx) -> falcon.App[falcon.Request, falcon.Response]:
    app = falcon.App(cors_enable=False, middleware=skeleton.middleware(ctx))
    slots = threading.Semaphore(long_poll_slots(ctx.settings.threads))
    skeleton.mount(app, lambda route: _responder(ctx, route, slots))

    def unmatched(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        skeleton.unmatched(ctx, req, resp, ex)

    for caught in (Exception, falcon.HTTPError):  # HTTPError too: falcon has its own for it
        app.add_error_handler(caught, unmatched)
    return app
