"""Every example in examples/ runs as it is against a real ``zoldyq serve`` and does its job."""

from __future__ import annotations

import runpy
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

EXAMPLES = servers.ROOT / "examples"


@pytest.fixture(scope="module")
def server() -> Iterator[servers.Server]:
    ns = unique_namespace()
    try:
        with servers.serve(ns, workers=1) as srv:
            yield srv
    finally:
        zoldyq.destroy(ns)


def run(srv: servers.Server, name: str, tmp_path: Path) -> str:
    """Run examples/<name> from outside the checkout; returns its output (exit 0 asserted)."""
    env = {**servers.settings_env("unused"), "ZOLDYQ_URL": srv.url}
    done = subprocess.run([servers.PYTHON, str(EXAMPLES / name)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_image_pipeline(server: servers.Server, tmp_path: Path) -> None:
    """Raw uploads streamed over WebSocket each become one queued thumbnail."""
    assert run(server, "image_pipeline.py", tmp_path).endswith(
        "done: 20 images streamed, 20 thumbnails queued\n")


def test_welcome_email(server: servers.Server, tmp_path: Path) -> None:
    """Every sign-up gets its email: long-poll with a lease, acked after sending."""
    out = run(server, "welcome_email.py", tmp_path)
    assert out.count("sent welcome email to") == 5
    assert out.endswith("done: 5 welcome emails sent\n")


def test_webhooks(server: servers.Server, tmp_path: Path) -> None:
    """Good endpoints get their event; the dead one is retried, then dead-lettered."""
    out = run(server, "webhooks.py", tmp_path)
    assert out.count("failed") == 3
    assert out.endswith("done: 3 delivered, 1 in webhooks.dlq\n")


def test_rate_limited(server: servers.Server, tmp_path: Path) -> None:
    """Delayed puts pace the calls: none is taken before its turn, 10 take >= 1.8 s."""
    out = run(server, "rate_limited.py", tmp_path)
    seconds = float(out.rsplit("done: 10 calls in ", 1)[1].split(" s,")[0])
    assert seconds >= 1.8
    assert out.endswith(" s, 0 before their turn\n")


def test_falcon_app_enqueues(server: servers.Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /signup answers 202 and the sign-up is in the server's queue; bad input is 400."""
    import falcon.testing

    monkeypatch.setenv("ZOLDYQ_URL", server.url)
    module = runpy.run_path(str(EXAMPLES / "falcon_app.py"))  # not as __main__: no server
    client = falcon.testing.TestClient(module["app"])
    try:
        r = client.simulate_post("/signup", json={"email": "ada@example.com"})
        assert (r.status_code, r.json) == (202, {"signed_up": "ada@example.com"})
        assert client.simulate_post("/signup", json={"email": 3}).status_code == 400
        with zoldyq.connect(server.url) as b:
            msgs = b.queue("welcome-emails").get_many(max=10)
        assert [m.payload for m in msgs] == [{"to": "ada@example.com", "name": "ada"}]
    finally:
        module["broker"].close()
