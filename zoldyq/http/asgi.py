"""The API as a ``falcon.asgi`` app: a long-poll is a coroutine, not a thread.

Waiting dequeues use ``Queue.aget_many``: one shared waiter thread per queue
per process, so any number of long-polls leave the event loop free for
enqueues and ``/health``. Everything else calls the engine directly, on the
loop: a put or a non-waiting get holds the queue's lock for microseconds and
never waits for a consumer (it can wait, briefly, for another process that
holds the same lock).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import falcon
import falcon.asgi

from zoldyq.http import core, ops, skeleton
from zoldyq.http.errors import body_too_large, complete, error_reply
from zoldyq.http.routes import WAITING, Route

_perf = time.perf_counter


async def read_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The whole body, refused (413) before reading when Content-Length says too big,
    or as soon as a chunked body passes ``limit``."""
    size = req.content_length
    if size is not None:
        if size > limit:
            raise body_too_large(size, limit)
        return complete(await req.stream.read(), size) if size else b""
    chunks, total = [], 0
    async for chunk in req.stream:
        total += len(chunk)
        if total > limit:
            raise body_too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def wait(w: core.Wait, gone: asyncio.Event | None) -> core.Reply:
    """Take for a client that is still there: stop waiting when it disconnects, and give
    back (at the head) what was taken if it left meanwhile."""
    if w.timeout <= 0 or gone is None:
        msgs = await w.atake(w.timeout) if w.timeout > 0 else w.take(0)
    else:
        take = asyncio.ensure_future(w.atake(w.timeout))
        left = asyncio.ensure_future(gone.wait())
        await asyncio.wait((take, left), return_when=asyncio.FIRST_COMPLETED)
        left.cancel()
        take.cancel()  # a no-op if it finished: the engine is only ever awaited between takes
        try:
            msgs = await take
        except asyncio.CancelledError:
            msgs = []
    if gone is not None and gone.is_set():
        w.give_back(msgs)
        return core.NO_CONTENT  # nobody reads it
    return w.reply(msgs)


def watch_disconnect(app: Any) -> Callable[..., Awaitable[None]]:
    """Let a dequeue see its client leave: ``scope["zoldyq.gone"]`` is set on
    ``http.disconnect``, which a pump reads ahead of the app (after the request
    body, nothing else can arrive)."""

    async def watched(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/dequeue"):
            await app(scope, receive, send)
            return
        gone = asyncio.Event()
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def pump() -> None:
            while True:
                message = await receive()
                inbox.put_nowait(message)
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        task = asyncio.ensure_future(pump())
        scope["zoldyq.gone"] = gone
        try:
            await app(scope, inbox.get, send)
        finally:
            task.cancel()

    return watched


def _responder(ctx: core.Ctx, route: Route) -> Callable[..., Awaitable[None]]:
    handler, waits, needs_body = route.handler, route.kind == WAITING, route.body

    async def respond(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str) -> None:
        t0 = _perf()
        try:
            skeleton.authorize(ctx, route, req)
            body = await read_body(req, ctx.max_body) if needs_body else b""
            out = handler(ctx, skeleton.call(req, body), **params)
            reply = await wait(out, req.scope.get("zoldyq.gone")) if waits else out
        except Exception as ex:
            reply = skeleton.failure(ex, req)
        skeleton.answer(ctx, route.name, req, resp, reply, t0)

    return respond


def guard_body_size(app: Any, ctx: core.Ctx) -> Callable[..., Awaitable[None]]:
    """Answer 413 to a Content-Length over the limit before the body is read.

    Falcon awaits the first body chunk before it calls a responder, so the
    check on the declared length must come first, at the ASGI level.
    """
    limit = ctx.max_body

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT"):
            for key, value in scope["headers"]:
                if key == b"content-length":
                    if value.isdigit() and int(value) > limit:
                        await _refuse(scope, send, int(value), limit)
                        return
                    break
        await app(scope, receive, send)

    async def _refuse(scope: dict[str, Any], send: Any, size: int, limit: int) -> None:
        status, data, _ = error_reply(body_too_large(size, limit), scope["method"], scope["path"])
        await send({"type": "http.response.start", "status": status, "headers": [
            (b"content-type", core.JSON.encode()), (b"content-length", b"%d" % len(data)),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": data})
        ops.observe(ctx, scope["method"], "unmatched", status, 0.0)

    return guarded


def create(ctx: core.Ctx) -> Callable[..., Awaitable[None]]:
    app = falcon.asgi.App(cors_enable=False)
    skeleton.mount(app, lambda route: _responder(ctx, route))

    async def unmatched(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any,
        ws: Any = None,
    ) -> None:
        skeleton.unmatched(ctx, req, resp, ex)

    for caught in (Exception, falcon.HTTPError):  # HTTPError too: falcon has its own for it
        app.add_error_handler(caught, unmatched)
    return guard_body_size(watch_disconnect(app), ctx)
