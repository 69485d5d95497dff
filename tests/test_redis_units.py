"""The Redis engine's pure parts: backend URLs, password sources, masking, key names."""

from __future__ import annotations

from pathlib import Path

import pytest

from zoldyq import settings
from zoldyq.errors import ConfigError
from zoldyq.redis import client, keys


def test_password_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ZOLDYQ_REDIS_PASSWORD wins over a password file; the file's first line is the password."""
    (tmp_path / "pw").write_text("from-file\n")
    monkeypatch.delenv("ZOLDYQ_REDIS_PASSWORD", raising=False)
    monkeypatch.delenv("ZOLDYQ_REDIS_PASSWORD_FILE", raising=False)
    assert client.password() is None
    assert client.password(str(tmp_path / "pw")) == "from-file"
    with pytest.raises(ConfigError):
        client.password(str(tmp_path / "missing"))
    monkeypatch.setenv("ZOLDYQ_REDIS_PASSWORD_FILE", str(tmp_path / "pw"))
    assert client.password() == "from-file"
    monkeypatch.setenv("ZOLDYQ_REDIS_PASSWORD", "from-env")
    assert client.password(str(tmp_path / "pw")) == "from-env"


def test_urls_are_masked_everywhere() -> None:
    """A password in a backend URL never shows: not in safe_url, config output or errors."""
    url = "redis://user:hunter2@db.example:6380/1"
    assert "hunter2" not in client.safe_url(url)
    assert "hunter2" not in settings.mask_url(url)
    assert "hunter2" not in client.safe_url("rediss://:hunter2@h:1/0")
    s = settings.Settings.load(env={"ZOLDYQ_BACKEND": url, "ZOLDYQ_CONFIG": "/nonexistent"})
    assert "hunter2" not in str(s.public())
    with pytest.raises(ConfigError) as info:
        settings.Settings.load(env={"ZOLDYQ_BACKEND": "mysql://u:hunter2@h/0",
                                    "ZOLDYQ_CONFIG": "/nonexistent"})
    assert "hunter2" not in str(info.value)


def test_backend_setting_accepts_shm_and_redis_urls() -> None:
    """backend is shm or a redis/rediss/redis+cluster URL; anything else is a ConfigError."""
    for ok in ("shm", "redis://h:1/0", "rediss://h:1/0", "redis+cluster://h:7000"):
        assert settings.Settings.load(
            env={"ZOLDYQ_BACKEND": ok, "ZOLDYQ_CONFIG": "/nonexistent"}).backend == ok
    for bad in ("redis", "http://h:1", "shm://x"):
        with pytest.raises(ConfigError):
            settings.Settings.load(env={"ZOLDYQ_BACKEND": bad, "ZOLDYQ_CONFIG": "/nonexistent"})


def test_a_queues_keys_share_one_hash_tag() -> None:
    """Every key of a queue carries the tag {ns:queue}, so it lives on one Cluster slot; the
    namespace prefixes them all."""
    ks = keys.queue("ns1", "jobs.dlq")
    assert all(k.startswith(b"{ns1:jobs.dlq}:") for k in ks)
    assert len(set(ks)) == len(keys.QUEUE_PARTS)
    assert all(k.startswith("{ns1}:") for k in keys.registry("ns1"))
