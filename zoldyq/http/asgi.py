"""The API as a ``falcon.asgi`` app: a long-poll is a coroutine, not a thread.

Waiting dequeues use ``Queue.aget_many``: one shared waiter thread per queue
per process, so any number of long-polls leave the event loop free for
enqueues and ``/health``. Everything else calls the engine on the loop, which
never waits for a lock (``broker.from_loop``): a put or a non-waiting get
holds the queue's lock for microseconds, but the holder may be a process
stopped with it (SIGSTOP, a debugger), and a loop that waited would freeze
every request of the worker. A call that finds a lock held is retried in a
thread that waits up to a second, then answers 503 ``queue_busy``. Calls that
take several locks in a row (creating, deleting a queue, snapshots) always
run in that thread.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import falcon
import falcon.asgi

from zoldyq.broker import LOCK_WAIT, LockBusy, from_loop, loop_thread
from zoldyq.errors import RequestError
from zoldyq.http import core, ops, skeleton
from zoldyq.http.errors import body_too_large, complete, error_reply
from zoldyq.http.routes import WAITING, Route

_perf = time.perf_counter


BODY_ENDED = "zoldyq.body_ended"  # scope key: the last body message came (not a disconnect)


async def read_body(req: falcon.asgi.Request, limit: int) -> bytes:
    """The whole body, refused (413) before reading when Content-Length says too big,
    or as soon as a chunked body passes ``limit``; 400 ``incomplete_body`` unless the
    request ended properly (a chunked body cut short is never stored)."""
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
    if not req.scope.get(BODY_ENDED):  # the stream also just stops when the client leaves
        raise RequestError(400, "incomplete_body",
                           f"request body ended after {total} bytes, before its last chunk")
    return b"".join(chunks)


OFF_LOOP = skeleton.SEVERAL_LOCKS


async def wait(w: core.Wait, gone: asyncio.Event | None, remote: bool = False) -> core.Reply:
    """Take for a client that is still there: stop waiting when it disconnects, and give
    back (at the head) what was taken if it left meanwhile. ``remote``: the engine's get
    is a round trip (Redis), so even a non-waiting one is awaited."""
    try:
        msgs = await _take(w, gone, remote)
    except LockBusy:  # the loop thread never waits for a lock: wait in a thread instead
        msgs = await from_loop(w.queue.name, w.take, w.timeout, wait=w.timeout + LOCK_WAIT,
                               on_loop=False)
    if gone is not None and gone.is_set():
        await from_loop(w.queue.name, w.give_back, msgs)
        return core.NO_CONTENT  # nobody reads it
    return w.reply(msgs)


async def _take(
    w: core.Wait, gone: asyncio.Event | None, remote: bool = False
) -> Sequence[Any]:
    if w.timeout <= 0 or gone is None:
        return await w.atake(w.timeout) if w.timeout > 0 or remote else w.take(0)
    take = asyncio.ensure_future(w.atake(w.timeout))
    left = asyncio.ensure_future(gone.wait())
    await asyncio.wait((take, left), return_when=asyncio.FIRST_COMPLETED)
    left.cancel()
    take.cancel()  # a no-op if it finished: the engine is only ever awaited between takes
    try:
        return await take
    except asyncio.CancelledError:
        return []


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
    on_loop = route.name not in OFF_LOOP
    # An engine behind a network round trip (Redis) must not hold the loop during one:
    # its puts and gets are awaited, its other calls run in the loop's thread pool, so
    # requests overlap their trips.
    remote = getattr(ctx.broker, "remote", False)
    aput = route.put if remote else None

    async def respond(req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: str) -> None:
        t0 = _perf()
        try:
            skeleton.authorize(ctx, route, req)
            body = await read_body(req, ctx.max_body) if needs_body else b""
            call = skeleton.call(req, body)
            out: Any
            if aput is not None:
                out = await aput(ctx, call, **params).arun()
            elif remote and not waits:
                out = await asyncio.to_thread(handler, ctx, call, **params)
            else:
                run = functools.partial(handler, ctx, call, **params)
                out = await from_loop(params.get("name", ""), run, on_loop=on_loop,
                                      patient=not on_loop)
            reply = await wait(out, req.scope.get("zoldyq.gone"), remote) if waits else out
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
        loop_thread()  # the thread running this: its lock acquires never wait
        if scope["type"] == "http" and scope["method"] in ("POST", "PUT"):
            for key, value in scope["headers"]:
                if key == b"content-length":
                    if value.isdigit() and int(value) > limit:
                        await _refuse(scope, send, int(value), limit)
                        return
                    break

            async def receive_noting_the_end() -> Any:
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body"):
                    scope[BODY_ENDED] = True
                return message

            await app(scope, receive_noting_the_end, send)
            return
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
    app = falcon.asgi.App(cors_enable=False, middleware=skeleton.middleware(ctx))
    skeleton.mount(app, lambda route: _responder(ctx, route))

    async def unmatched(
        req: falcon.asgi.Request, resp: falcon.asgi.Response, ex: Exception, params: Any,
        ws: Any = None,
    ) -> None:
        skeleton.unmatched(ctx, req, resp, ex)

    for caught in (Exception, falcon.HTTPError):  # HTTPError too: falcon has its own for it
        app.add_error_handler(caught, unmatched)
    return guard_body_size(watch_disconnect(app), ctx)
