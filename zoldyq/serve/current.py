"""This server process's settings: in a process the launcher forked, the launcher's own
object (loading them again from the environment would copy ~0.5 MB of shared pages into
each process); otherwise (``gunicorn -c gunicorn.conf.py`` alone) loaded once."""

from __future__ import annotations

from zoldyq.settings import Settings

_settings: Settings | None = None


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings.load()
    return _settings


def inherit(settings: Settings) -> None:
    """In the launcher, before forking: what its children's environment says too."""
    global _settings
    _settings = settings
