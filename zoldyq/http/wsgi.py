"""The API as a WSGI ``falcon.App``, for gunicorn's gthread worker.

A gthread worker serves each request on one of a fixed pool of threads, and
a long-poll holds its thread while it waits. So at most ``threads - spare``
long-polls wait at once per worker (``spare`` = a quarter of the threads, at
least 2): the spare threads keep enqueue and ``/health`` answering however
many consumers are parked. A long-poll beyond that bound does not wait: it
is answered at once (a message, or 204 with ``Retry-After: 1``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import falcon

from zoldyq.http import core, ops, ui
from zoldyq.http.errors import body_too_large, complete, error_reply
from zoldyq.http.routes import Route, by_path

_perf = time.perf_counter
CHUNK = 64 << 10


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole body, refused (413) before reading when Content-Length says too big,
    or as soon as a chunked body passes ``limit``."""
    size = req.content_length
    if size is not None:
        if size > limit:
            raise body_too_large(size, limit)
        return complete(req.bounded_stream.read(), size) if size else b""
    chunks, total = [], 0
    while chunk := req.stream.read(CHUNK):
        total += len(chunk)
        if total > limit:
            raise body_too_large(None, limit)
        chunks.append(chunk)
    return b"".join(chunks)


def long_poll_slots(threads: int) -> int:
    return max(1, threads - max(2, threads // 4))


def _responder(ctx: core.Ctx, route: Route, slots: threading.Semaphore) -> Callable[..., None]:
    handler, name, needs_body, auth = route.handler, route.name, route.body, route.auth
    waits = name == "dequeue"

    def respond(req: falcon.Request, resp: falcon.Response, **params: str) -> None:
        t0 = _perf()
        try:
            if auth and ctx.token:
                core.check_auth(ctx, req.get_header("Authorization"))
            ui.check(ctx.settings.ui, name, req.get_header(ui.MARKER))
            if waits:
                q, n, timeout, batch = core.dequeue_args(
                    ctx, req.get_param("timeout"), req.get_param("max"), **params
                )
                if timeout > 0 and slots.acquire(blocking=False):
                    try:
                        msgs = q.get_many(n, timeout)
                    finally:
                        slots.release()
                    reply = core.dequeue_reply(q, msgs, batch)
                else:
                    reply = core.dequeue_reply(q, q.get_many(n, 0), batch)
                    if timeout > 0 and reply.status == 204:
                        reply = reply._replace(headers={"Retry-After": "1"})
            elif name == "peek":
                reply = core.peek(ctx, req.get_param("max"), **params)
            else:
                body = read_body(req, ctx.max_body) if needs_body else b""
                assert handler is not None
                reply = handler(ctx, req.content_type, body, **params)
        except Exception as ex:
            status, data, headers = error_reply(ex, req.method, req.path)
            reply = core.Reply(status, data, core.JSON, headers)
        core.write(resp, reply)
        ops.observe(ctx, req.method, name, reply.status, _perf() - t0)

    return respond


def create(ctx: core.Ctx) -> falcon.App:
    app = falcon.App(cors_enable=False)
    slots = threading.Semaphore(long_poll_slots(ctx.settings.threads))
    for path, routes in by_path().items():
        app.add_route(path, SimpleNamespace(
            **{"on_" + r.method.lower(): _responder(ctx, r, slots) for r in routes}
        ))

    def unmatched(req: falcon.Request, resp: falcon.Response, ex: Exception, params: Any) -> None:
        """Errors raised outside a responder: unknown route, wrong method, bad header."""
        status, data, headers = error_reply(ex, req.method, req.path)
        core.write(resp, core.Reply(status, data, core.JSON, headers))
        ops.observe(ctx, req.method, "unmatched", status, 0.0)

    app.add_error_handler((Exception, falcon.HTTPError), unmatched)
    return app
