"""Structured logging for every ZoldyQ process: one line per event, ``pretty`` or ``json``.

``setup(settings)`` configures the root logger; ``gunicorn_config(settings)``
is the ``logconfig_dict`` that routes gunicorn's own loggers through the
same formatter, so a server's output has one format. Stack traces stay in
the log (as one JSON field, or indented lines when pretty), never on the wire.

Secrets never reach a log line, at any level: ``Redact`` (a filter on the
one handler every logger writes through) blanks the configured token
wherever it appears, and any ``?token=`` value or ``Authorization``
credentials (the websockets library logs both at debug level). And no
repeated warning or error can flood the log: ``RateLimit`` lets
``BURST`` lines of one message template through per ``WINDOW`` seconds and
then says how many it dropped (a process at its descriptor limit once wrote a
traceback per accept retry, hundreds of megabytes a minute).
"""

from __future__ import annotations

import logging
import logging.config
import re
import time
from typing import Any

import orjson

from zoldyq.settings import Settings

LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


REDACTED = "<redacted>"
_SECRET_SHAPES = re.compile(
    r"(?i)(token=)[^&\s'\"]+|(authorization['\"]?[:=,]?\s*['\"]?(?:bearer|basic)?\s*)[^\s'\",]+"
)


def redact(text: str, secret: str | None = None) -> str:
    """``text`` with ``secret`` and every token-shaped value replaced by ``<redacted>``."""
    if secret:
        text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(lambda m: (m.group(1) or m.group(2)) + REDACTED, text)


class Redact(logging.Filter):
    """Rewrites each record's message (and stack trace) with ``redact``."""

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret or None

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secret)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secret)
        return True


class RateLimit(logging.Filter):
    """At most ``burst`` records per (logger, level, message template) per ``window`` s,
    from warning level up; the first one after a window that dropped some says how many."""

    MAX_KEYS = 1024

    def __init__(self, burst: int = 10, window: float = 10.0) -> None:
        super().__init__()
        self.burst, self.window = burst, window
        self._seen: dict[tuple[str, int, str], list[float]] = {}  # key -> [start, count]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.window:
            entry[1] += 1
            return entry[1] <= self.burst
        if len(self._seen) >= self.MAX_KEYS:
            self._seen.clear()
        self._seen[key] = [now, 1]
        dropped = int(entry[1]) - self.burst if entry is not None else 0
        if dropped > 0:
            record.msg = f"{record.msg} [{dropped} more like this in {self.window:g} s not shown]"
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "pid", "msg", ...extra, "exc"}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = record.exc_text or self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class PrettyFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s[%(process)d] "
                         "%(message)s", "%H:%M:%S")
        self.converter = time.localtime


def _formatter_ref(fmt: str) -> dict[str, Any]:
    cls = JsonFormatter if fmt == "json" else PrettyFormatter
    return {"()": f"{cls.__module__}.{cls.__qualname__}"}


def logconfig(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the root, zoldyq and gunicorn loggers."""
    level = LEVELS[settings.log_level]
    handler = {"class": "logging.StreamHandler", "formatter": "zoldyq",
               "stream": "ext://sys.stderr", "filters": ["ratelimit", "redact"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"zoldyq": _formatter_ref(settings.log_format)},
        "filters": {"ratelimit": {"()": f"{RateLimit.__module__}.{RateLimit.__qualname__}"},
                    "redact": {"()": f"{Redact.__module__}.{Redact.__qualname__}",
                               "secret": settings.token}},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            # one line per request costs CPU on every request: only at debug level
            "gunicorn.access": {"level": "DEBUG" if level == "DEBUG" else "WARNING",
                                "handlers": ["stderr"], "propagate": False},
        },
    }


def setup(settings: Settings) -> None:
    logging.config.dictConfig(logconfig(settings))
