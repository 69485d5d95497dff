"""One frozen Settings, built once per process: CLI flags > ZOLDYQ_* env > zoldyq.toml > defaults.

Every setting is declared once in ``SETTINGS`` (name, type, default, help);
the env name (``ZOLDYQ_<NAME>``), the CLI flag (``--<name>``), validation and
``zoldyq config`` output all derive from that table.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from zoldyq.errors import ConfigError


class Setting(NamedTuple):
    name: str
    type: Callable[[str], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "ZOLDYQ_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _bool(text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        low = str(text).strip().lower()
        if low not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return low

    return parse


def _optional_str(text: str) -> str | None:
    return str(text) or None


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "127.0.0.1", "HTTP bind address"),
    Setting("port", int, 9000, "HTTP port"),
    Setting("ws_port", int, 9001, "WebSocket sidecar port (same host)"),
    Setting("namespace", str, "zoldyq", "prefix of every shared-memory object"),
    Setting("workers", int, 2, "gunicorn worker processes"),
    Setting("threads", int, 16, "threads per gunicorn worker"),
    Setting("default_queue_capacity", int, 100_000, "messages per queue, unless set per queue"),
    Setting("default_queue_max_bytes", int, 32 << 20, "ring bytes per queue (records + 16 B)"),
    Setting("max_message_bytes", int, 128 << 10, "largest payload accepted (413 above)"),
    Setting("max_queues", int, 100, "queues per namespace"),
    Setting("dequeue_max_timeout", float, 30.0, "longest dequeue long-poll, seconds"),
    Setting("max_batch", int, 1000, "most messages in one batch request"),
    Setting("token", _optional_str, None, "bearer token required by HTTP/WS (unset: no auth)"),
    Setting("tls_cert", _optional_str, None, "TLS certificate file (enables HTTPS/WSS)"),
    Setting("tls_key", _optional_str, None, "TLS private key file"),
    Setting("log_level", _choice("debug", "info", "warning", "error"), "info", "log level"),
    Setting("log_format", _choice("pretty", "json"), "pretty", "log line format"),
    Setting("keep_namespace", _bool, False, "leave the namespace in place on shutdown"),
    Setting("ws", _bool, True, "run the WebSocket sidecar with the HTTP server"),
    Setting("ws_max_connections", int, 10_000, "open WebSocket connections at most"),
    Setting("ws_slow_consumer_timeout", float, 30.0, "close a WS consumer stuck this long"),
    Setting("ws_compression", _bool, False, "permessage-deflate on WebSocket"),
    Setting("snapshot_dir", _optional_str, None, "directory for snapshots (unset: disabled)"),
    Setting("graceful_timeout", float, 5.0, "seconds to finish in-flight work on shutdown"),
    Setting("worker_class", _choice("asgi", "gthread"), "asgi",
            "gunicorn worker: asgi (a long-poll costs no thread) or gthread"),
    Setting("max_body_bytes", int, 16 << 20, "largest HTTP request body (413 before reading)"),
    Setting("ws_origins", _optional_str, None,
            "comma-separated Origin values the WS sidecar accepts (unset: any)"),
    Setting("ws_ping_interval", float, 20.0, "seconds between WS keepalive pings (0: off)"),
    Setting("snapshot_on_exit", _bool, False, "save every queue to the snapshot dir on shutdown"),
    Setting("restore", _bool, False, "load the namespace's snapshot (if any) on start"),
    Setting("backend", str, "shm",
            "storage engine: shm (this host) or redis://host:6379/0, rediss://, "
            "redis+cluster://host:port (password in the URL or ZOLDYQ_REDIS_PASSWORD)"),
    Setting("redis_password_file", _optional_str, None, "file holding the Redis password"),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str
    port: int
    ws_port: int
    namespace: str
    workers: int
    threads: int
    default_queue_capacity: int
    default_queue_max_bytes: int
    max_message_bytes: int
    max_queues: int
    dequeue_max_timeout: float
    max_batch: int
    token: str | None
    tls_cert: str | None
    tls_key: str | None
    log_level: str
    log_format: str
    keep_namespace: bool
    ws: bool
    ws_max_connections: int
    ws_slow_consumer_timeout: float
    ws_compression: bool
    snapshot_dir: str | None
    graceful_timeout: float
    worker_class: str
    max_body_bytes: int
    ws_origins: str | None
    ws_ping_interval: float
    snapshot_on_exit: bool
    restore: bool
    backend: str
    redis_password_file: str | None

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        toml_path: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Merge the sources; raises ConfigError naming the source of a bad value."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {s.name: s.default for s in SETTINGS}
        path = toml_path or env.get("ZOLDYQ_CONFIG") or "zoldyq.toml"
        if Path(path).is_file():
            for key, raw in _read_toml(Path(path)).items():
                values[key] = _parse(key, raw, f"{path}")
        elif toml_path:
            raise ConfigError(f"config file {toml_path} does not exist")
        for s in SETTINGS:
            if s.env in env:
                values[s.name] = _parse(s.name, env[s.env], s.env)
        for key, raw in (cli or {}).items():
            if raw is not None:
                values[key] = _parse(key, raw, _BY_NAME[key].flag)
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        for name in ("port", "ws_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name} must be 0..65535, got {getattr(self, name)}")
        for name in ("workers", "threads", "max_queues", "max_batch", "ws_max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dequeue_max_timeout <= 3600:
            raise ConfigError(
                f"dequeue_max_timeout must be 0..3600 s, got {self.dequeue_max_timeout}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
        scheme = self.backend.split("://", 1)[0].lower()
        if self.backend != "shm" and (
            "://" not in self.backend or scheme not in _REDIS_SCHEMES
        ):
            raise ConfigError(
                f"backend must be shm or a redis:// URL, got {mask_url(self.backend)!r}"
            )
        if (self.snapshot_on_exit or self.restore) and not self.snapshot_dir:
            raise ConfigError("snapshot_on_exit and restore need snapshot_dir")

    def as_env(self) -> dict[str, str]:
        """The settings as ZOLDYQ_* variables, so child processes read the same values."""
        out = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            if value is not None:
                out[s.env] = str(value).lower() if isinstance(value, bool) else str(value)
        return out

    def public(self) -> dict[str, Any]:
        """For ``zoldyq config``: every value, the token masked."""
        out = dataclasses.asdict(self)
        if out["token"]:
            out["token"] = "***"
        out["backend"] = mask_url(out["backend"])
        return out


_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for output and logs)."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


def _parse(name: str, raw: Any, source: str) -> Any:
    setting = _BY_NAME.get(name)
    if setting is None:
        raise ConfigError(f"{source}: unknown setting '{name}'")
    if isinstance(raw, bool) and setting.type is not _bool:
        raise ConfigError(f"{source}: {name} must not be a boolean")
    try:
        return setting.type(raw)
    except (TypeError, ValueError) as ex:
        raise ConfigError(f"{source}: bad value {raw!r} for {name} ({ex})") from None


def _read_toml(path: Path) -> dict[str, Any]:
    """Flat keys, or grouped in tables ([server] port = 9000): the table name is ignored."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as ex:
        raise ConfigError(f"{path}: {ex}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """Add one ``--flag`` per setting; unset flags stay None so lower sources win."""
    for s in SETTINGS:
        if only is not None and s.name not in only:
            continue
        if s.type is _bool:
            parser.add_argument(
                s.flag, dest=s.name, default=None, action=argparse.BooleanOptionalAction,
                help=f"{s.help} [{s.env}]",
            )
        else:
            parser.add_argument(
                s.flag, dest=s.name, default=None, metavar=s.name.split("_")[-1].upper(),
                help=f"{s.help} (default {s.default}) [{s.env}]",
            )


def from_args(ns: argparse.Namespace, **kw: Any) -> Settings:
    cli = {s.name: getattr(ns, s.name) for s in SETTINGS if hasattr(ns, s.name)}
    return Settings.load(cli=cli, **kw)
