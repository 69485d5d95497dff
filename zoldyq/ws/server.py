"""The sidecar process: a ``websockets`` asyncio server over an attached namespace.

Handshake checks (``process_request``): the connection limit (HTTP 503), the
Origin (HTTP 403: only the server's own and the configured ones, see
``api.origin_allowed``; the HTTP side applies the same policy) and the bearer
token (HTTP 401), each answered with a JSON error body. Path and queue name are checked once
the connection is open, so that browsers see a close code (1008) and reason.

A watchdog closes peers that stop receiving: a connection whose write buffer
is not empty and has not moved for ``ws_slow_consumer_timeout`` seconds gets
close code 1008 ``slow_consumer``. It samples buffers once per tick instead
of timing every send, so the streaming path pays nothing for it.

File descriptors: each connection costs one, and a process at its
``RLIMIT_NOFILE`` can no longer accept (asyncio then retries and logs every
second, and handshakes time out). So the sidecar raises its soft limit to
the hard one, keeps ``FD_MARGIN`` for itself, two per queue for the
namespace, ``ACCEPT_BURSTS`` bursts of ``BACKLOG`` accepts (asyncio accepts up
to the backlog at each wake-up before any connection is seen) and ``LINGER`` for refused sockets
waiting for their request, and derives the connection limit
from the rest (``connection_limit``). Past it a handshake gets 503, and a TCP
connection (open or still handshaking) past it is answered 503 and closed at
once, so the descriptors never run out.

SIGTERM/SIGINT only set an event; the main coroutine then closes every
connection with 1001, wakes the waiting streams and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import logging
import resource
import signal
import ssl
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from zoldyq import broker as engine
from zoldyq.api import Broker, origin_allowed, parse_origins
from zoldyq.broker import loop_thread, open_namespace
from zoldyq.errors import ZoldyQError
from zoldyq.ops import logs
from zoldyq.ops.metrics import WS_CONNECTIONS_KEY
from zoldyq.settings import Settings
from zoldyq.ws import frames
from zoldyq.ws.checks import token_ok
from zoldyq.ws.handlers import SHUTDOWN_REASON, handle

log = logging.getLogger("zoldyq.ws")

WRITE_LIMIT = 32 << 10  # transport high-water mark: what may sit in our buffers per stream
FD_MARGIN = 32  # descriptors kept for the process itself (logs, listeners, the loop's own)
# a queue handle keeps one (its mapping's), and the old handle of a queue deleted and
# re-created may hold its own a second longer (handles of deleted queues close lazily)
FDS_PER_QUEUE = 2
BACKLOG = 64  # listen backlog, and so the most connections asyncio accepts in one go
LINGER = BACKLOG // 2  # refused sockets kept open up to a second for their request (_guarded)
# asyncio accepts up to BACKLOG sockets per wake-up, and a socket refused at once is closed
# only two loop turns later (transport, connection_made, close): three bursts can be open
ACCEPT_BURSTS = 3


def connection_limit(configured: int, max_queues: int) -> int:
    """``configured``, lowered to what ``RLIMIT_NOFILE`` leaves after the margin (at least 1).

    The soft limit is raised to the hard one first, as most servers do.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return configured
    spare = FD_MARGIN + FDS_PER_QUEUE * max_queues + ACCEPT_BURSTS * BACKLOG + LINGER
    return max(1, min(configured, soft - spare))


def run(settings: Settings, standalone: bool = False, configured: bool = False) -> int:
    """Serve until SIGTERM/SIGINT; the process exit status.

    Args:
        settings: where to listen and which namespace to serve.
        standalone: create the namespace if missing (``zoldyq ws``); it is
            never destroyed here. Under ``zoldyq serve`` the launcher owns it.
        configured: logging is set up for ``settings`` already (forked from the
            launcher, which did it: doing it again costs ~1 MB of copied pages).
    """
    if not configured:
        logs.setup(settings)
    if settings.log_level != "debug":  # one line per connection is noise (and CPU)
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        broker = open_namespace(settings) if standalone else engine.attach_namespace(settings)
    except ZoldyQError as ex:
        log.error("cannot start: %s", ex)
        return 2
    try:
        asyncio.run(serve_until_stopped(settings, broker))
    except OSError as ex:  # port in use, bad TLS files...
        log.error("cannot serve: %s", ex)
        return 2
    finally:
        broker.close()
    return 0


async def serve_until_stopped(
    settings: Settings, broker: Broker, stop: asyncio.Event | None = None
) -> None:
    """Serve ``broker`` on ``settings.host:ws_port`` until ``stop`` is set (or a signal)."""
    loop = asyncio.get_running_loop()
    loop_thread()  # no lock held by a stopped process may freeze every connection
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    server = await start(settings, broker)
    log.info("zoldyq ws listening on %s:%d (namespace %s)",
             settings.host, settings.ws_port, settings.namespace)
    watchdog = asyncio.create_task(_watchdog(server, settings.ws_slow_consumer_timeout))
    gauge = asyncio.create_task(_publish_connections(server, broker))
    await stop.wait()
    log.info("zoldyq ws shutting down")
    watchdog.cancel()
    gauge.cancel()
    server.close(code=CloseCode.GOING_AWAY, reason=SHUTDOWN_REASON)
    broker.interrupt()  # waiting streams see it and leave
    try:
        await asyncio.wait_for(server.wait_closed(), settings.graceful_timeout + 1)
    except TimeoutError:
        log.warning("connections still open after %.1f s", settings.graceful_timeout)


async def start(settings: Settings, broker: Broker) -> Server:
    """Start listening (the caller closes the returned server)."""
    server: Server | None = None
    limit = connection_limit(settings.ws_max_connections, broker.max_queues)
    if limit < settings.ws_max_connections:
        log.warning("at most %d WebSocket connections (ws_max_connections %d does not fit the "
                    "file descriptor limit %d)", limit, settings.ws_max_connections,
                    resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    too_many = _reject(http.HTTPStatus.SERVICE_UNAVAILABLE, "too_many_connections",
                       f"the server holds its maximum of {limit} WebSocket connections")

    allowed = parse_origins(settings.cors_origins, settings.ws_origins)
    own_ports = {settings.port, settings.ws_port}

    def check(conn: ServerConnection, request: Request) -> Response | None:
        if server is not None and len(server.handler_tasks) > limit:
            return too_many
        origin = request.headers.get("Origin")
        if not origin_allowed(origin, request.headers.get("Host"), own_ports, allowed):
            return _reject(http.HTTPStatus.FORBIDDEN, "forbidden_origin",
                           f"Origin {(origin or '')[:80]!r} may not open streams here (the server "
                           "allows its own origins and those in ZOLDYQ_CORS_ORIGINS)")
        if not token_ok(settings.token, request.headers.get("Authorization"), request.path):
            resp = _reject(http.HTTPStatus.UNAUTHORIZED, "unauthorized",
                           "a valid bearer token is required "
                           "(Authorization: Bearer <token> or ?token=<token>)")
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        return None

    server = await serve(
        functools.partial(handle, broker=broker),
        settings.host,
        settings.ws_port,
        process_request=check,
        compression="deflate" if settings.ws_compression else None,
        max_size=broker.defaults.max_message_bytes + frames.ENVELOPE_BYTES,
        ping_interval=settings.ws_ping_interval or None,
        ping_timeout=settings.ws_ping_interval or None,
        close_timeout=min(10.0, settings.graceful_timeout),
        write_limit=WRITE_LIMIT,
        ssl=_ssl_context(settings),
        server_header=None,
        create_connection=_guarded(limit, _raw(too_many)),
        backlog=BACKLOG,
    )
    return server


def _raw(resp: Response) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in resp.headers.raw_items())
    return f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}\r\n{head}\r\n".encode() + resp.body


def _guarded(limit: int, refusal: bytes) -> type[ServerConnection]:
    """A connection class that answers 503 at once past ``limit`` TCP connections (open
    or handshaking), with no handshake task.

    A refused socket is answered once the client's request has arrived
    (answering earlier, or closing on unread data, can make the client lose
    the answer), and closed after a second without one; during a flood, past
    half the backlog of such sockets, the next ones are closed at once.
    """
    lingering = [0]

    class Guarded(ServerConnection):
        _refused = False

        def connection_made(self, transport: Any) -> None:
            if len(self.server.handler_tasks) < limit:
                super().connection_made(transport)
                return
            self._refused = True
            if lingering[0] >= LINGER:
                transport.close()
                return
            lingering[0] += 1
            self._closer = self.loop.call_later(1.0, transport.close)
            self._transport = transport

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)
            elif b"\r\n\r\n" in data and not self._transport.is_closing():
                self._transport.write(refusal)
                self._transport.close()

        def eof_received(self) -> None:
            if not self._refused:
                super().eof_received()

        def connection_lost(self, exc: Exception | None) -> None:
            if not self._refused:
                super().connection_lost(exc)
            elif hasattr(self, "_closer"):
                self._closer.cancel()
                lingering[0] -= 1

    return Guarded


def _reject(status: http.HTTPStatus, code: str, message: str) -> Response:
    body = orjson.dumps({"error": code, "message": message})
    headers = Headers([
        ("Connection", "close"),
        ("Content-Length", str(len(body))),
        ("Content-Type", "application/json"),
    ])
    return Response(status.value, status.phrase, headers, body)


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.tls_cert:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(settings.tls_cert, settings.tls_key)
    return ctx


async def _publish_connections(server: Server, broker: Broker) -> None:
    """Keep zoldyq_websocket_connections current in the namespace's shared counters."""
    try:
        counters = broker.counters()
    except (OSError, ZoldyQError) as ex:
        log.warning("cannot publish the connection count: %s", ex)
        return
    try:
        while True:
            counters.set(WS_CONNECTIONS_KEY, len(server.connections))
            await asyncio.sleep(1.0)
    finally:
        with contextlib.suppress(OSError, ValueError):
            counters.set(WS_CONNECTIONS_KEY, 0)
            counters.close()


async def _watchdog(server: Server, timeout: float) -> None:
    """Close connections whose unsent bytes have not moved for ``timeout`` seconds."""
    tick = max(0.05, min(1.0, timeout / 5))
    last: dict[ServerConnection, tuple[int, float]] = {}  # buffered bytes, stuck since
    closing: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        seen: dict[ServerConnection, tuple[int, float]] = {}
        for conn in server.connections:
            buffered = conn.transport.get_write_buffer_size()
            if not buffered:
                continue
            before, since = last.get(conn, (-1, now))
            if buffered != before:
                since = now
            elif now - since >= timeout:
                reason = f"slow_consumer: received nothing for {timeout:g} s"
                task = asyncio.create_task(conn.close(CloseCode.POLICY_VIOLATION, reason))
                closing.add(task)
                task.add_done_callback(closing.discard)
                log.warning("closing %s: %s", conn.remote_address, reason)
                continue
            seen[conn] = (buffered, since)
        last = seen
