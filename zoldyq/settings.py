"""One frozen Settings, built once per process: CLI flags > ZOLDYQ_* env > zoldyq.toml > defaults.

Every setting is declared once, as a field of ``Settings``: its name (also
the toml key), its type (the annotation), its default, its help text and its
check. The env name (``ZOLDYQ_<NAME>``), the CLI flag (``--<name>``), the
parser, validation, ``zoldyq config`` and the README's table all derive from
that one declaration (``SETTINGS`` lists them), as gunicorn's ``config.py``
does for its own settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from zoldyq.api import DEFAULT_NAMESPACE
from zoldyq.errors import ConfigError

#: Set by the launcher (or gunicorn's master) for its children: when the server started.
STARTED_AT_ENV = "ZOLDYQ_STARTED_AT"
#: Set by the launcher for its children: who owns (and will destroy) the namespace.
OWNER_ENV = "ZOLDYQ_NAMESPACE_OWNER"


def _bool(text: Any) -> bool:
    low = str(text).strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _optional_str(text: Any) -> str | None:
    return str(text) or None


_PARSERS: dict[Any, Callable[[Any], Any]] = {
    "str": str, "int": int, "float": float, "bool": _bool, "str | None": _optional_str,
}


def between(low: float, high: float, unit: str = "") -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be {low:g}..{high:g}{unit}, got {v}"


def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low:g}, got {v}"


def _setting(
    default: Any,
    help: str,
    check: Callable[[Any], str | None] | None = None,
    choices: tuple[str, ...] = (),
    secret: bool = False,
) -> Any:
    return dataclasses.field(default=default, metadata={
        "help": help, "check": check, "choices": choices, "secret": secret,
    })


PORT = between(0, 65535)
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


def _backend_problem(value: str) -> str | None:
    scheme, sep, _ = value.partition("://")
    if value == "shm" or (sep and scheme.lower() in _REDIS_SCHEMES):
        return None
    return f"must be shm or a redis:// URL, got {mask_url(value)!r}"


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for output and logs)."""
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)


@dataclasses.dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", "HTTP bind address")
    port: int = _setting(9000, "HTTP port", PORT)
    ws_port: int = _setting(9001, "WebSocket sidecar port (same host)", PORT)
    namespace: str = _setting(DEFAULT_NAMESPACE, "prefix of every shared-memory object")
    workers: int = _setting(2, "gunicorn worker processes", at_least(1))
    threads: int = _setting(16, "threads per gunicorn worker", at_least(1))
    default_queue_capacity: int = _setting(
        100_000, "messages per queue, unless set per queue", at_least(1))
    default_queue_max_bytes: int = _setting(
        32 << 20, "ring bytes per queue (records + 8 B)", at_least(1))
    max_message_bytes: int = _setting(
        128 << 10, "largest payload accepted (413 above)", at_least(1))
    max_queues: int = _setting(100, "queues per namespace", at_least(1))
    dequeue_max_timeout: float = _setting(
        30.0, "longest dequeue long-poll, seconds", between(0, 3600, " s"))
    max_batch: int = _setting(1000, "most messages in one batch request", at_least(1))
    token: str | None = _setting(
        None, "bearer token required by HTTP/WS (unset: no auth)", secret=True)
    token_file: str | None = _setting(
        None, "file holding the token (a flag's value shows in ps; a file's does not)")
    tls_cert: str | None = _setting(None, "TLS certificate file (enables HTTPS/WSS)")
    tls_key: str | None = _setting(None, "TLS private key file")
    log_level: str = _setting(
        "info", "log level", choices=("debug", "info", "warning", "error"))
    log_format: str = _setting("pretty", "log line format", choices=("pretty", "json"))
    keep_namespace: bool = _setting(False, "leave the namespace in place on shutdown")
    ws: bool = _setting(True, "run the WebSocket sidecar with the HTTP server")
    ws_max_connections: int = _setting(
        10_000, "open WebSocket connections at most", at_least(1))
    ws_slow_consumer_timeout: float = _setting(30.0, "close a WS consumer stuck this long")
    ws_compression: bool = _setting(False, "permessage-deflate on WebSocket")
    snapshot_dir: str | None = _setting(None, "directory for snapshots (unset: disabled)")
    graceful_timeout: float = _setting(5.0, "seconds to finish in-flight work on shutdown")
    worker_class: str = _setting(
        "asgi", "gunicorn worker: asgi (a long-poll costs no thread) or gthread",
        choices=("asgi", "gthread"))
    max_body_bytes: int = _setting(
        16 << 20, "largest HTTP request body (413 before reading)", at_least(1))
    ws_origins: str | None = _setting(
        None, "more Origins the WS sidecar accepts, besides cors_origins (comma-separated)")
    cors_origins: str | None = _setting(
        None, "browser Origins allowed besides the server's own, for HTTP (CORS) and WS "
        "(comma-separated, * for any; unset: only the server's own)")
    ws_ping_interval: float = _setting(20.0, "seconds between WS keepalive pings (0: off)")
    snapshot_on_exit: bool = _setting(False, "save every queue to the snapshot dir on shutdown")
    restore: bool = _setting(False, "load the namespace's snapshot (if any) on start")
    backend: str = _setting(
        "shm", "storage engine: shm (this host) or redis://host:6379/0, rediss://, "
        "redis+cluster://host:port (password in the URL or ZOLDYQ_REDIS_PASSWORD)",
        lambda v: _backend_problem(v))
    redis_password_file: str | None = _setting(None, "file holding the Redis password")
    ui: str = _setting("on", "the admin page at /ui (read-only: no actions)",
                       choices=("off", "read-only", "on"))

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        toml_path: str | os.PathLike[str] | None = None,
    ) -> Settings:
        """Merge the sources; raises ConfigError naming the source of a bad value."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
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
                values[key] = _parse(key, raw, BY_NAME[key].flag)
        if values.get("token_file"):
            values["token"] = _read_token(values["token_file"])
        settings = cls(**values)
        settings._check()
        return settings

    def _check(self) -> None:
        """Each setting's own check, then the rules that tie settings together."""
        for s in SETTINGS:
            problem = s.check(getattr(self, s.name)) if s.check else None
            if problem:
                raise ConfigError(f"{s.name} {problem}")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert and tls_key go together")
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
        """For ``zoldyq config``: every value, secrets masked."""
        out = dataclasses.asdict(self)
        for s in SETTINGS:
            if s.secret and out[s.name]:
                out[s.name] = "***"
        out["backend"] = mask_url(out["backend"])
        return out


class Setting(NamedTuple):
    """One declared setting, as the CLI, the environment and the docs see it."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    check: Callable[[Any], str | None] | None
    choices: tuple[str, ...]
    secret: bool
    is_bool: bool

    @property
    def env(self) -> str:
        return "ZOLDYQ_" + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _declared() -> tuple[Setting, ...]:
    hints = {f.name: str(f.type) for f in dataclasses.fields(Settings)}
    typing.get_type_hints(Settings)  # fails loudly on an annotation that does not resolve
    out = []
    for f in dataclasses.fields(Settings):
        parse = _PARSERS[hints[f.name]]
        choices = f.metadata["choices"]
        if choices:
            parse = _choice(f.name, choices)
        out.append(Setting(f.name, parse, f.default, f.metadata["help"], f.metadata["check"],
                           choices, f.metadata["secret"], parse is _bool))
    return tuple(out)


def _choice(name: str, options: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(text: Any) -> str:
        low = str(text).strip().lower()
        if low not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return low

    return parse


SETTINGS: tuple[Setting, ...] = _declared()
BY_NAME = {s.name: s for s in SETTINGS}


def _read_token(path: str) -> str:
    try:
        token = Path(path).read_text().strip()
    except (OSError, UnicodeDecodeError) as ex:
        raise ConfigError(f"token_file {path}: {ex}") from None
    if not token:
        raise ConfigError(f"token_file {path} is empty")
    return token


def _parse(name: str, raw: Any, source: str) -> Any:
    setting = BY_NAME.get(name)
    if setting is None:
        raise ConfigError(f"{source}: unknown setting '{name}'")
    if isinstance(raw, bool) and not setting.is_bool:
        raise ConfigError(f"{source}: {name} must not be a boolean")
    try:
        return setting.parse(raw)
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
        if s.is_bool:
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


def markdown_table() -> str:
    """The README's table of settings, made from the declarations."""
    rows = ["| setting | env | flag | default | meaning |", "| --- | --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "unset" if s.default is None else str(s.default).lower() \
            if isinstance(s.default, bool) else str(s.default)
        meaning = s.help + (f" ({' / '.join(s.choices)})" if s.choices else "")
        rows.append(f"| `{s.name}` | `{s.env}` | `{s.flag}` | `{default}` | {meaning} |")
    return "\n".join(rows)
