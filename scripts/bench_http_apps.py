"""Baselines for scripts/bench_http.py, served by the same gunicorn settings as ZoldyQ.

- ``noop_asgi`` / ``noop_wsgi``: a Falcon route that reads the body and
  answers a constant: the ceiling of Falcon + gunicorn on this machine.
- ``bare_asgi``: no framework at all, the ceiling of the routes ``zoldyq.http.hot``
  answers ahead of Falcon: reads the whole body as hot.py does (one ``receive()`` when
  the body came in one message, else every chunk joined) and answers a constant
  with the same headers.
- ``redis_asgi`` / ``redis_wsgi``: the same enqueue/dequeue/batch API over
  Redis lists (LPUSH/RPOP), what a Python shop would build instead. Each
  stored value is the 8-byte enqueue time in µs followed by the payload's
  JSON bytes, spliced into the dequeue response like ZoldyQ does.

Redis is at ``$BENCH_REDIS_URL``.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

import falcon
import falcon.asgi
import orjson

NOOP = b'{"ok":true}'
_T = struct.Struct("<q")


def _enqueued(name: str, size: int, at: int) -> bytes:
    return b'{"queued":true,"queue_name":"%s","queue_size":%d,"enqueued_at":%d}' % (
        name.encode(), size, at)


def _record(payload: object) -> tuple[int, bytes]:
    at = time.time_ns() // 1000
    return at, _T.pack(at) + orjson.dumps(payload)


def _dequeued(name: str, value: bytes, size: int) -> bytes:
    return b'{"payload":%s,"queue_name":"%s","enqueued_at":%d,"queue_size":%d}' % (
        value[8:], name.encode(), _T.unpack_from(value)[0], size)


class _NoopWsgi:
    def on_get(self, req: falcon.Request, resp: falcon.Response, **kw: str) -> None:
        resp.data = NOOP

    def on_post(self, req: falcon.Request, resp: falcon.Response, **kw: str) -> None:
        req.bounded_stream.read()
        resp.data = NOOP


class _NoopAsgi:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                     **kw: str) -> None:
        resp.data = NOOP

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                      **kw: str) -> None:
        await req.stream.read()
        resp.data = NOOP


def _app(app: falcon.App, resources: dict[str, object]) -> falcon.App:
    for path, res in resources.items():
        app.add_route(path, res)
    return app


_BARE_START = {"type": "http.response.start", "status": 200, "headers": [
    (b"content-length", b"%d" % len(NOOP)), (b"content-type", b"application/json")]}
_BARE_BODY = {"type": "http.response.body", "body": NOOP}


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare no-op: gunicorn's protocol and a body read, nothing else."""
    if scope["type"] == "lifespan":  # nothing to start or stop
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    message = await receive()
    if message.get("more_body"):
        chunks = [message.get("body", b"")]
        while message["type"] == "http.request" and message.get("more_body"):
            message = await receive()
            chunks.append(message.get("body", b""))
        b"".join(chunks)
    await send(_BARE_START)
    await send(_BARE_BODY)


noop_wsgi = _app(falcon.App(), {"/noop/{name}": _NoopWsgi()})
noop_asgi = _app(falcon.asgi.App(), {"/noop/{name}": _NoopAsgi()})


# -- Falcon + Redis lists (sync client under gthread) -------------------------------------------


class _RedisWsgi:
    def __init__(self) -> None:
        import redis

        self.r = redis.Redis.from_url(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))

    def on_post_enqueue(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        at, value = _record(orjson.loads(req.bounded_stream.read())["payload"])
        resp.data = _enqueued(name, self.r.lpush(name, value), at)

    def on_post_batch(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        payloads = orjson.loads(req.bounded_stream.read())["payloads"]
        values = [_record(p)[1] for p in payloads]
        resp.data = _enqueued(name, self.r.lpush(name, *values), time.time_ns() // 1000)

    def on_get_dequeue(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        with self.r.pipeline(transaction=False) as p:
            value, size = p.rpop(name).llen(name).execute()
        if value is None:
            resp.status = 204
        else:
            resp.data = _dequeued(name, value, size)


class _RedisAsgi:
    def __init__(self) -> None:
        self._r = None

    @property
    def r(self):  # type: ignore[no-untyped-def]
        if self._r is None:  # bound to the worker's event loop: made on first use
            import redis.asyncio

            self._r = redis.asyncio.Redis.from_url(
                os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
        return self._r

    async def on_post_enqueue(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                              name: str) -> None:
        at, value = _record(orjson.loads(await req.stream.read())["payload"])
        resp.data = _enqueued(name, await self.r.lpush(name, value), at)

    async def on_post_batch(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                            name: str) -> None:
        payloads = orjson.loads(await req.stream.read())["payloads"]
        values = [_record(p)[1] for p in payloads]
        resp.data = _enqueued(name, await self.r.lpush(name, *values), time.time_ns() // 1000)

    async def on_get_dequeue(self, req: falcon.asgi.Request, resp: falcon.asgi.Response,
                             name: str) -> None:
        async with self.r.pipeline(transaction=False) as p:
            value, size = await p.rpop(name).llen(name).execute()
        if value is None:
            resp.status = 204
        else:
            resp.data = _dequeued(name, value, size)


def _redis_routes(app: falcon.App, res: object) -> falcon.App:
    app.add_route("/queues/{name}/enqueue", res, suffix="enqueue")
    app.add_route("/queues/{name}/batch", res, suffix="batch")
    app.add_route("/queues/{name}/dequeue", res, suffix="dequeue")
    return app


redis_wsgi = _redis_routes(falcon.App(), _RedisWsgi())
redis_asgi = _redis_routes(falcon.asgi.App(), _RedisAsgi())
