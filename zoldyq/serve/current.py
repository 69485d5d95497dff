"""This server process's settings and, under ``zoldyq serve``, its app (on shm) and the
descriptors its workers must not keep.

In a process the launcher forked, the settings are the launcher's own object (loading
them again from the environment would copy ~0.5 MB of shared pages into each process);
otherwise (``gunicorn -c gunicorn.conf.py`` alone) they are loaded once. The app is
built by the launcher before forking when it can be (``preload``), else on demand."""

from __future__ import annotations

from typing import Any

from zoldyq.settings import Settings

_settings: Settings | None = None
_app: Any = None
_launcher_fds: frozenset[int] = frozenset()


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def inherit(settings: Settings, app: Any = None, fds: frozenset[int] = frozenset()) -> None:
    """In the launcher, before forking: what its children's environment says too, the
    app it built for them (None: gunicorn builds one), and its own descriptors."""
    global _settings, _app, _launcher_fds
    _settings, _app, _launcher_fds = settings, app, fds


def launcher_fds() -> frozenset[int]:
    """The launcher's own descriptors (its owner flock), which a worker it forks closes."""
    return _launcher_fds


def app() -> Any:
    """The app the launcher built, or a new one."""
    if _app is not None:
        return _app
    from zoldyq.http import create_app

    return create_app(settings())
