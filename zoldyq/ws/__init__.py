"""The WebSocket sidecar: streaming enqueue and dequeue over ``websockets`` (asyncio).

    frames    the wire format, pure functions over bytes
    checks    path, bearer token and Origin rules, pure functions
    handlers  the enqueue and dequeue streams of one connection
    server    the server, its watchdog and the process's ``run``
"""

from zoldyq.ws.server import run, serve_until_stopped, start

__all__ = ["run", "serve_until_stopped", "start"]
