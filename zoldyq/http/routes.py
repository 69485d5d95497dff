"""Every route of the API, as data: both app shells and the OpenAPI document read this table."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from zoldyq.http import core, ops, ui

PLAIN, WAITING = "plain", "waiting"


class Route(NamedTuple):
    name: str  # operationId, and the label of request metrics
    method: str
    path: str
    handler: Callable[..., Any]  # (ctx, call, **path params) -> Reply, or a Wait if WAITING
    kind: str = PLAIN  # WAITING: the shell waits for the handler's Wait, its own way
    body: bool = False  # the shell reads the body (under the size limit) first
    auth: bool = True  # needs the token when one is configured
    # the handler's parse, its store left to await
    put: Callable[..., core.Put | core.BatchPut] | None = None


def _openapi(ctx: core.Ctx, call: core.Call) -> core.Reply:
    from zoldyq.http import openapi  # here: its tables (0.1 MB) serve this route only

    return core.Reply(200, openapi.document_bytes(ROUTES, ctx.max_timeout, ctx.max_batch))


ROUTES: tuple[Route, ...] = (
    Route("enqueue", "POST", "/queues/{name}/enqueue", core.enqueue, body=True,
          put=core.enqueue_put),
    Route("dequeue", "GET", "/queues/{name}/dequeue", core.dequeue, WAITING),
    Route("enqueue_batch", "POST", "/queues/{name}/batch", core.enqueue_batch, body=True,
          put=core.enqueue_batch_put),
    Route("ack", "POST", "/queues/{name}/ack", core.ack, body=True),
    Route("nack", "POST", "/queues/{name}/nack", core.nack, body=True),
    Route("extend", "POST", "/queues/{name}/extend", core.extend, body=True),
    Route("redrive", "POST", "/queues/{name}/redrive", core.redrive),
    Route("peek", "GET", "/queues/{name}/peek", core.peek),
    Route("list_queues", "GET", "/queues", core.list_queues),
    Route("get_queue", "GET", "/queues/{name}", core.get_queue),
    Route("put_queue", "PUT", "/queues/{name}", core.put_queue, body=True),
    Route("delete_queue", "DELETE", "/queues/{name}", core.delete_queue),
    Route("clear_queue", "POST", "/queues/{name}/clear", core.clear_queue),
    Route("info", "GET", "/info", ops.info),
    Route("health", "GET", "/health", ops.health, auth=False),
    Route("metrics", "GET", "/metrics", ops.metrics),
    Route("snapshot", "POST", "/admin/snapshot", ops.snapshot, body=True),
    Route("openapi", "GET", "/openapi.json", _openapi, auth=False),
    Route("ui", "GET", "/ui", ui.page, auth=False),
    Route("ui_asset", "GET", "/ui/{name}", ui.asset, auth=False),
)


def by_path() -> dict[str, list[Route]]:
    out: dict[str, list[Route]] = {}
    for r in ROUTES:
        out.setdefault(r.path, []).append(r)
    return out
