"""Structured logging for every ZoldyQ process: one line per event, ``pretty`` or ``json``.

``setup(settings)`` configures the root logger; ``gunicorn_config(settings)``
is the ``logconfig_dict`` that routes gunicorn's own loggers through the
same formatter, so a server's output has one format. Stack traces stay in
the log (as one JSON field, or indented lines when pretty), never on the wire.
"""

from __future__ import annotations

import logging
import logging.config
import time
from typing import Any

import orjson

from zoldyq.settings import Settings

LEVELS = {"debug": "DEBUG", "info": "INFO", "warning": "WARNING", "error": "ERROR"}
_RESERVED = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


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
            out["exc"] = self.formatException(record.exc_info)
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
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"zoldyq": _formatter_ref(settings.log_format)},
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
