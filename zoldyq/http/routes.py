"""Every route of the API, as data: both app shells and the OpenAPI document read this table."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from zoldyq.http import core, ops, ui


class Route(NamedTuple):
    name: str  # operationId, and the label of request metrics
    method: str
    path: str
    handler: Callable[..., core.Reply] | None  # None: dequeue and peek (query parameters)
    body: bool = False  # the shell reads the body (under the size limit) first
    auth: bool = True  # needs the token when one is configured


ROUTES: tuple[Route, ...] = (
    Route("enqueue", "POST", "/queues/{name}/enqueue", core.enqueue, body=True),
    Route("dequeue", "GET", "/queues/{name}/dequeue", None),
    Route("enqueue_batch", "POST", "/queues/{name}/batch", core.enqueue_batch, body=True),
    Route("peek", "GET", "/queues/{name}/peek", None),
    Route("list_queues", "GET", "/queues", core.list_queues),
    Route("get_queue", "GET", "/queues/{name}", core.get_queue),
    Route("put_queue", "PUT", "/queues/{name}", core.put_queue, body=True),
    Route("delete_queue", "DELETE", "/queues/{name}", core.delete_queue),
    Route("clear_queue", "POST", "/queues/{name}/clear", core.clear_queue),
    Route("health", "GET", "/health", ops.health, auth=False),
    Route("metrics", "GET", "/metrics", ops.metrics),
    Route("snapshot", "POST", "/admin/snapshot", ops.snapshot, body=True),
    Route("openapi", "GET", "/openapi.json", lambda *a: _openapi(*a), auth=False),
    Route("ui", "GET", "/ui", lambda c, *_: ui.page(c.settings.ui, bool(c.token)), auth=False),
    Route("ui_asset", "GET", "/ui/{asset}", lambda c, *_, asset: ui.asset(c.settings.ui, asset),
          auth=False),
)


def _openapi(ctx: core.Ctx, content_type: str | None, body: bytes) -> core.Reply:
    from zoldyq.http import openapi  # it reads this table

    return core.Reply(200, openapi.document_bytes(ctx.max_timeout, ctx.max_batch))


def by_path() -> dict[str, list[Route]]:
    out: dict[str, list[Route]] = {}
    for r in ROUTES:
        out.setdefault(r.path, []).append(r)
    return out
