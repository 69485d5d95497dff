"""What both app shells share: mounting the route table, running a handler, answering.

A shell (``asgi``, ``wsgi``) keeps only what differs between servers: how it
reads a body and how it waits for a ``Wait``. Everything else, the token
check, the handler call, turning any exception into a JSON error and counting
the request, happens here once.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import falcon

from zoldyq.broker import LOCK_WAIT, LockBusy
from zoldyq.errors import QueueBusy
from zoldyq.http import core, ops, ui
from zoldyq.http.errors import error_reply
from zoldyq.http.routes import Route, by_path

#: Routes whose call takes several locks in a row and must not stop half-way: they
#: never run on an event loop, and wait for their locks as long as it takes.
SEVERAL_LOCKS = frozenset({"put_queue", "delete_queue", "snapshot", "redrive"})


def middleware(ctx: core.Ctx) -> list[Any]:
    """CORS for the configured origins (falcon's middleware answers preflights too)."""
    if not ctx.origins:
        return []
    allow: Any = "*" if "*" in ctx.origins else sorted(ctx.origins)
    return [falcon.CORSMiddleware(allow_origins=allow, expose_headers=[
        "X-Zoldyq-Queue-Name", "X-Zoldyq-Enqueued-At", "X-Zoldyq-Queue-Size", "Retry-After"])]


def mount(app: Any, make_responder: Callable[[Route], Callable[..., Any]]) -> None:
    """One Falcon resource per path, with an ``on_<method>`` responder per route."""
    table = by_path()
    for i, (path, routes) in enumerate(table.items()):
        app.add_route(path, SimpleNamespace(
            **{"on_" + r.method.lower(): make_responder(r) for r in routes}
        ), compile=i == len(table) - 1)


def authorize(ctx: core.Ctx, route: Route, req: Any) -> None:
    """Raises 403 for a page from a foreign origin (any route: a simple cross-site
    request needs no preflight, so CORS alone would not stop it), 401 when the route
    needs the configured token and the request lacks it, 403 when the admin page is
    read-only and the page asks for a change."""
    origin = req.get_header("Origin")
    if origin is not None:  # a browser's request: only then is the Host needed
        core.check_origin(ctx, origin, req.get_header("Host"))
    if route.auth and ctx.token:
        core.check_auth(ctx, req.get_header("Authorization"))
    if ctx.ui_read_only:
        ui.check(ctx.settings.ui, route.name, req.get_header(ui.MARKER))


def call(req: Any, body: bytes = b"") -> core.Call:
    """A repeated query parameter counts once, with its last value (as ``get_param`` does)."""
    params = req.params
    if params:
        params = {k: v if isinstance(v, str) else v[-1] for k, v in params.items()}
    return core.Call(req.content_type, body, params)


def failure(ex: BaseException, method: str, path: str) -> core.Reply:
    if isinstance(ex, LockBusy):  # a lock held elsewhere met where no call waits: busy
        ex = QueueBusy(path.split("/")[2] if path.startswith("/queues/") else "", LOCK_WAIT)
    status, data, headers = error_reply(ex, method, path)
    return core.Reply(status, data, core.JSON, headers)


def answer(count: Callable[[str, int], None], req: Any, resp: Any, reply: core.Reply) -> None:
    """Write ``reply`` and count the request (``count``: the route's ``ops.counter``)."""
    core.write(resp, reply)
    count(req.method, reply.status)


def unmatched(ctx: core.Ctx, req: Any, resp: Any, ex: BaseException) -> None:
    """Errors raised outside a responder: unknown route, wrong method, bad header."""
    answer(ops.counter(ctx, "unmatched"), req, resp, failure(ex, req.method, req.path))
