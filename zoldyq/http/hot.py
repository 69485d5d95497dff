"""The data path's three routes answered straight from the ASGI scope, ahead of Falcon.

An enqueue, a batch enqueue and a non-waiting dequeue are most of the traffic,
and Falcon's request and response objects, routing and middleware cost more
than the handler itself. So a request to one of them that has nothing else for
Falcon to look at is run here, with the same handlers (``core``), the same
error replies (``skeleton.failure``) and the same request counter as the
Falcon app: the bytes of every answer are the same, headers included. Anything
else goes to the Falcon app, unchanged: a query string (waits, batches, leases,
delays), an ``Origin`` (the origin check and CORS), a configured token, a
read-only admin page, a chunked or repeated-header body, a remote engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from zoldyq.broker import LockBusy, from_loop, on_the_loop
from zoldyq.http import core, ops, skeleton
from zoldyq.http.errors import complete
from zoldyq.http.routes import ROUTES, WAITING, Route

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
PREFIX = "/queues/"
HOT = frozenset({"enqueue", "enqueue_batch", "dequeue"})
#: headers the hot path reads; a request with any other that matters goes to Falcon
_READ = frozenset({b"content-type", b"content-length"})
_TO_FALCON = frozenset({b"origin", b"transfer-encoding"})
_NONE: dict[str, str] = {}


def wrap(app: App, ctx: core.Ctx) -> App:
    """``app`` (the whole asgi app: size guard, Falcon) with the hot routes answered
    first; ``app`` itself when the configuration leaves them nothing to skip (a token,
    a read-only page, Redis)."""
    if ctx.token or ctx.ui_read_only or getattr(ctx.broker, "remote", False):
        return app
    routes = {(r.method, r.path.rsplit("/", 1)[1]): (r, ops.counter(ctx, r.name))
              for r in ROUTES if r.name in HOT}
    limit = ctx.max_body

    async def hot(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["query_string"] \
                or not scope["path"].startswith(PREFIX):
            return await app(scope, receive, send)
        path = scope["path"]
        name, _, op = path[len(PREFIX):].partition("/")
        method = scope["method"]
        found = routes.get((method, op))
        if found is None or not name:
            return await app(scope, receive, send)
        seen: dict[bytes, bytes] = {}
        for key, value in scope["headers"]:
            if key in _READ:
                if key in seen:
                    return await app(scope, receive, send)
                seen[key] = value
            elif key in _TO_FALCON:
                return await app(scope, receive, send)
        route, count = found
        size = seen.get(b"content-length")
        if route.body and (size is None or not size.isdigit() or int(size) > limit):
            return await app(scope, receive, send)  # chunked, malformed, or a 413
        ctype = seen.get(b"content-type")
        try:
            body = await _body(receive, int(size)) if route.body and size else b""
            call = core.Call(None if ctype is None else ctype.decode("latin1"), body, _NONE)
            try:  # the usual case: on the loop, no coroutine, no thread
                reply = _now(route, ctx, call, name)
            except LockBusy:
                reply = await _in_thread(route, ctx, call, name)
        except Exception as ex:
            reply = skeleton.failure(ex, method, path)
        await send(_start(reply))
        await send({"type": "http.response.body", "body": reply.body})
        count(method, reply.status)

    return hot


async def _body(receive: Any, size: int) -> bytes:
    """The body of a request with a Content-Length (400 ``incomplete_body`` if cut short)."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body"):
        return complete(message.get("body", b""), size)  # the usual case: one message
    chunks = []
    while message["type"] == "http.request":  # else the client left
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
        message = await receive()
    return complete(b"".join(chunks), size)


def _now(route: Route, ctx: core.Ctx, call: core.Call, name: str) -> core.Reply:
    """The handler on the loop, as the asgi shell runs it (a dequeue here never waits).

    Raises:
        LockBusy: a lock was held elsewhere; nothing changed (``_in_thread`` retries).
    """
    out = on_the_loop(name, route.handler, ctx, call, name)
    if route.kind != WAITING:
        return out  # type: ignore[no-any-return]
    return out.reply(on_the_loop(name, out.take, 0.0))  # type: ignore[no-any-return]


async def _in_thread(route: Route, ctx: core.Ctx, call: core.Call, name: str) -> core.Reply:
    """``_now`` in the thread that may wait for a lock (a dequeue's handler only reads,
    so running it again is safe)."""
    out = await from_loop(name, route.handler, ctx, call, name, on_loop=False)
    if route.kind != WAITING:
        return out  # type: ignore[no-any-return]
    return out.reply(await from_loop(name, out.take, 0.0, on_loop=False))  # type: ignore[no-any-return]


_JSON = (b"content-type", core.JSON.encode())


def _start(reply: core.Reply) -> dict[str, Any]:
    """Falcon's start of the same Reply: status, Content-Length, Content-Type, headers."""
    if reply.status == 204:
        return {"type": "http.response.start", "status": 204, "headers": []}
    ctype = reply.content_type
    headers = [(b"content-length", b"%d" % len(reply.body)),
               _JSON if ctype == core.JSON else (b"content-type", ctype.encode())]
    if reply.headers:
        headers += [(k.lower().encode(), v.encode("latin1")) for k, v in reply.headers.items()]
    return {"type": "http.response.start", "status": reply.status, "headers": headers}
