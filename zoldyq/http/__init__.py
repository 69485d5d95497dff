"""The HTTP transport: Falcon apps (asgi or WSGI) over the shared queues."""

from zoldyq.http.app import create_app

__all__ = ["create_app"]
