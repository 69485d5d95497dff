"""README lines that once disagreed with the server say what it does (issue 10, item 23)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from websockets.sync.client import connect

import zoldyq
from tests.helpers import servers
from tests.helpers.ws import closed_with, sidecar

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_ws_message_too_large_example_is_what_the_sidecar_answers(namespace: str) -> None:
    """The README's example error frame is the sidecar's answer; far above it, close 1009."""
    line = next(ln for ln in README.splitlines() if ln.startswith('{"error": "message_too_large"'))
    example = json.loads(line)
    zoldyq.create(namespace).close()  # the default 128 KiB limit
    with sidecar(namespace) as srv:
        with connect(srv.url + "/queues/big/enqueue", max_size=None) as c:
            c.send(json.dumps({"payload": "x" * (example["size"] - 2)}))  # JSON string quotes
            assert json.loads(c.recv(timeout=10)) == example
        with connect(srv.url + "/queues/big/enqueue") as c:
            c.send(json.dumps({"payload": "x" * 140_000}))
            assert closed_with(c)[0] == 1009


def test_caps_that_do_not_fit_together_get_bad_config(namespace: str) -> None:
    """The PUT row names both codes: bad_caps for a bad value, bad_config for a bad mix."""
    row = next(ln for ln in README.splitlines() if ln.startswith("| `PUT /queues/{name}`"))
    assert "`bad_caps`" in row
    assert "`bad_config`" in row
    with servers.gunicorn(namespace, workers=1) as srv:
        r = srv.call("PUT", "/queues/a", json={"max_messages": 0})
        assert (r.status, r.json()["error"]) == (400, "bad_caps")
        r = srv.call("PUT", "/queues/b", json={"max_bytes": 1024, "max_message_bytes": 4096})
        assert (r.status, r.json()["error"]) == (400, "bad_config"), r


def test_the_service_unit_installs_from_a_checkout_not_pypi() -> None:
    """ZoldyQ is not on PyPI: the unit's install line must not say ``pip install zoldyq``."""
    unit = (ROOT / "deploy" / "zoldyq.service").read_text()
    assert not re.search(r"pip install zoldyq\b", unit)
    assert "checkout" in unit
    assert "ZOLDYQ_TOKEN_FILE" in unit
