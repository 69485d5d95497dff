"""This server process's settings and, under ``zoldyq serve`` on shm, its app.

In a process the launcher forked, the settings are the launcher's own object (loading
them again from the environment would copy ~0.5 MB of shared pages into each process);
otherwise (``gunicorn -c gunicorn.conf.py`` alone) they are loaded once. The app is
built by the launcher before forking when it can be (``preload``), else on demand."""

from __future__ import annotations

from typing import Any

from zoldyq.settings import Settings

_settings: Settings | None = None
_app: Any = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def inherit(settings: Settings, app: Any = None) -> None:
    """In the launcher, before forking: what its children's environment says too, and the
    app it built for them (None: each gunicorn master builds its own)."""
    global _settings, _app
    _settings, _app = settings, app


def app() -> Any:
    """The app the launcher built, or a new one."""
    if _app is not None:
        return _app
    from zoldyq.http import create_app

    return create_app(settings())
