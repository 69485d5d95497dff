"""Settings: one declaration each; defaults < zoldyq.toml < env < CLI; clear errors."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from zoldyq import settings
from zoldyq.errors import ConfigError
from zoldyq.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def load(tmp_path: Path, toml: str = "", env: dict[str, str] | None = None,
         argv: list[str] | None = None) -> Settings:
    path = tmp_path / "zoldyq.toml"
    path.write_text(toml)
    parser = argparse.ArgumentParser()
    settings.add_arguments(parser)
    return settings.from_args(parser.parse_args(argv or []), env=env or {}, toml_path=path)


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    s = load(tmp_path)
    assert (s.port, s.namespace, s.workers, s.token) == (9000, "zoldyq", 2, None)


def test_each_source_overrides_the_one_below(tmp_path: Path) -> None:
    """defaults < toml < env < CLI, setting by setting."""
    toml = "port = 9100\nworkers = 3\nthreads = 4\n[log]\nlog_level = 'debug'\n"
    env = {"ZOLDYQ_WORKERS": "5", "ZOLDYQ_THREADS": "6"}
    s = load(tmp_path, toml, env, ["--threads", "7"])
    assert (s.max_queues, s.port, s.workers, s.threads, s.log_level) == (100, 9100, 5, 7, "debug")


def test_boolean_flags_and_env_parse_alike(tmp_path: Path) -> None:
    assert load(tmp_path, env={"ZOLDYQ_WS": "off"}).ws is False
    assert load(tmp_path, env={"ZOLDYQ_WS": "off"}, argv=["--ws"]).ws is True
    assert load(tmp_path, "keep_namespace = true").keep_namespace is True


def test_a_bad_value_names_its_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ZOLDYQ_PORT: bad value 'x' for port"):
        load(tmp_path, env={"ZOLDYQ_PORT": "x"})
    with pytest.raises(ConfigError, match=r"zoldyq.toml: unknown setting 'prot'$"):
        load(tmp_path, "prot = 1")
    with pytest.raises(ConfigError, match=r"^--log-level: bad value 'loud' for log_level"):
        load(tmp_path, argv=["--log-level", "loud"])
    with pytest.raises(ConfigError, match=r"workers must not be a boolean$"):
        load(tmp_path, "workers = true")


def test_checks_come_from_the_declarations(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^port must be 0..65535, got 70000$"):
        load(tmp_path, env={"ZOLDYQ_PORT": "70000"})
    with pytest.raises(ConfigError, match=r"^workers must be at least 1, got 0$"):
        load(tmp_path, argv=["--workers", "0"])
    with pytest.raises(ConfigError, match=r"^dequeue_max_timeout must be 0..3600 s, got 4000.0$"):
        load(tmp_path, env={"ZOLDYQ_DEQUEUE_MAX_TIMEOUT": "4000"})
    with pytest.raises(ConfigError, match=r"^tls_cert and tls_key go together$"):
        load(tmp_path, env={"ZOLDYQ_TLS_CERT": "/x"})


def test_children_read_the_same_values(tmp_path: Path) -> None:
    """as_env round-trips: a child process built from it gets equal settings."""
    s = load(tmp_path, env={"ZOLDYQ_TOKEN": "t0k", "ZOLDYQ_WS": "0", "ZOLDYQ_PORT": "9123"})
    assert Settings.load(env=s.as_env(), toml_path=tmp_path / "zoldyq.toml") == s


def test_secrets_are_masked_in_the_public_view(tmp_path: Path) -> None:
    assert load(tmp_path, env={"ZOLDYQ_TOKEN": "t0k"}).public()["token"] == "***"


def test_every_setting_has_one_env_name_and_one_flag() -> None:
    envs = [s.env for s in settings.SETTINGS]
    assert len(set(envs)) == len(envs)
    assert all(re.fullmatch(r"ZOLDYQ_[A-Z_]+", e) for e in envs)


def test_readme_table_is_made_from_the_declarations() -> None:
    """The README's settings table is exactly what the declarations print."""
    text = README.read_text()
    table = text.split("<!-- settings-table -->\n")[1].split("\n<!-- /settings-table -->")[0]
    assert table == settings.markdown_table()
