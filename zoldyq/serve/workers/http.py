"""The gunicorn app module (``zoldyq.serve.workers.http:app``).

``app`` is made when gunicorn asks for it, not at import: the launcher imports this
module before forking (so the master does not run the import machinery again) and may
have built the app itself (``current.app``)."""

from typing import Any

from zoldyq.serve import current


def __getattr__(name: str) -> Any:
    if name == "app":
        return current.app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
