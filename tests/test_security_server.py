"""Security review of the servers (issue 6, item 5), against real gunicorn workers.

- the bearer token is compared with ``hmac.compare_digest`` (constant time) on
  both HTTP and WebSocket, and near-miss tokens are refused;
- no request can make the server write outside the snapshot directory;
- error bodies never echo unbounded input: a 1 MB queue name, JSON body,
  header or parameter gets a short answer.

Shared-memory objects being 0600 and another user being unable to attach are
in tests/test_security.py.
"""

from __future__ import annotations

import contextlib
import hmac
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace
from zoldyq.http import core
from zoldyq.ws import checks

TOKEN = "correct-horse-battery-staple"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MB = 1 << 20
SHORT = 512  # no error body may be longer than this


@pytest.fixture(scope="module", params=["asgi", "gthread"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[servers.Server]:
    root = tmp_path_factory.mktemp("sec")
    (root / "snapshots").mkdir()
    ns = unique_namespace()
    try:
        with servers.gunicorn(ns, workers=2, token=TOKEN, worker_class=request.param,
                              snapshot_dir=str(root / "snapshots")) as s:
            s.root = root  # type: ignore[attr-defined]
            yield s
    finally:
        zoldyq.destroy(ns)


# -- token ---------------------------------------------------------------------------


def test_http_token_check_uses_compare_digest() -> None:
    ctx = SimpleNamespace(token=TOKEN.encode())
    with mock.patch.object(core.hmac, "compare_digest", wraps=hmac.compare_digest) as cd:
        core.check_auth(ctx, f"Bearer {TOKEN}")  # type: ignore[arg-type]
        with pytest.raises(zoldyq.ZoldyQError):
            core.check_auth(ctx, "Bearer " + "x" * len(TOKEN))  # type: ignore[arg-type]
        with pytest.raises(zoldyq.ZoldyQError):
            core.check_auth(ctx, None)  # type: ignore[arg-type]
    assert cd.call_count == 3  # every check, including a missing header, goes through it
    assert all(call.args[1] == TOKEN.encode() for call in cd.call_args_list)


def test_ws_token_check_uses_compare_digest() -> None:
    with mock.patch.object(checks.hmac, "compare_digest", wraps=hmac.compare_digest) as cd:
        assert checks.token_ok(TOKEN, f"Bearer {TOKEN}", "/queues/a/dequeue")
        assert not checks.token_ok(TOKEN, "Bearer " + "x" * len(TOKEN), "/queues/a/dequeue")
        assert checks.token_ok(TOKEN, None, f"/queues/a/dequeue?token={TOKEN}")
    assert cd.call_count == 3


@pytest.mark.parametrize("offered", [
    "", TOKEN[:-1], TOKEN + "x", TOKEN[:-1] + "X", TOKEN.upper(), " " + TOKEN + "\t!",
])
def test_near_miss_tokens_are_refused(srv: servers.Server, offered: str) -> None:
    r = srv.call("GET", "/queues", headers={"Authorization": f"Bearer {offered}"})
    assert r.status == 401
    assert r.json()["error"] == "unauthorized"
    assert TOKEN not in r.body.decode()
    assert srv.call("GET", "/queues", headers=AUTH).status == 200


# -- snapshots stay in their directory ----------------------------------------------------


def _tree(root: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime for p in root.rglob("*")}


HOSTILE_NAMES = [
    "../escape", "../../../../tmp/zq-escape", "/tmp/zq-escape", "a/b", "..", ".", ".hidden",
    "x\x00y", "..%2f..%2fescape", "snap/../../escape", "~root/x", "a\\..\\b", "", " ",
    "x" * 65, "\u2025/escape", "escape\n", 7, None, ["a"], {"a": 1},
]


@pytest.mark.parametrize("field", ["name", "queue"])
def test_no_request_writes_outside_the_snapshot_directory(srv: servers.Server,
                                                          field: str) -> None:
    root: Path = srv.root  # type: ignore[attr-defined]
    snaps = root / "snapshots"
    outside = root / "outside.zqsnap"
    outside.write_bytes(b"precious")
    (snaps / "link.zqsnap").unlink(missing_ok=True)
    (snaps / "link.zqsnap").symlink_to(outside)  # a symlink planted in the directory
    srv.call("POST", "/queues/sq/enqueue", json={"payload": 1}, headers=AUTH)
    before = _tree(root)
    for name in [*HOSTILE_NAMES, "link", "link.zqsnap"]:
        for action in ("save", "load"):
            if name is None and field == "queue":
                continue  # no queue: every queue, a valid request
            r = srv.call("POST", "/admin/snapshot", headers=AUTH,
                         json={"action": action, field: name})
            assert r.status in (400, 404), (name, action, r)
            assert len(r.body) < SHORT, r
            assert r.json()["error"], r
    assert _tree(root) == before
    assert outside.read_bytes() == b"precious"
    assert not Path("/tmp/zq-escape").exists()
    assert not Path("/tmp/zq-escape.zqsnap").exists()
    # the directory itself still works
    r = srv.call("POST", "/admin/snapshot", headers=AUTH, json={"name": "fine"})
    assert r.status == 200, r
    assert (snaps / "fine.zqsnap").is_file()
    assert "file" not in r.json()


# -- error bodies stay short --------------------------------------------------------------


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes, return everything the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        with contextlib.suppress(OSError):  # the server may answer and close before the end
            s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except OSError:
            pass
    return out


def _parser_error(srv: servers.Server, request: bytes, status: bytes) -> None:
    """Past gunicorn's parser limits (4094-byte request line, 8190-byte header, 100
    headers) gunicorn answers itself, in plain text: short, never the input."""
    out = _raw(srv.port, request)
    assert out.startswith(b"HTTP/1.1 " + status), out[:300]
    assert len(out) < 1024, out[:300]


def _short_json_error(r: servers.Response, status: int, code: str) -> None:
    assert r.status == status, r
    assert len(r.body) < SHORT, r
    assert r.json()["error"] == code


def test_huge_queue_name_in_path(srv: servers.Server) -> None:
    _short_json_error(srv.call("GET", "/queues/" + "x" * 4000, headers=AUTH), 400, "bad_name")
    _short_json_error(srv.call("GET", "/" + "z" * 4000, headers=AUTH), 404, "not_found")
    _parser_error(srv, b"GET /queues/" + b"x" * MB + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414")


def test_huge_bad_bodies(srv: servers.Server) -> None:
    json_ct = {**AUTH, "Content-Type": "application/json"}
    for body in (b"{" + b"x" * MB, b'{"payload": "' + b"x" * MB, b"\xff" * MB,
                 b'{"payload": 1}' + b" x" * MB):
        _short_json_error(srv.call("POST", "/queues/a/enqueue", body=body, headers=json_ct),
                          400, "bad_json")
    _short_json_error(srv.call("PUT", "/queues/c", json={"k" * MB: 1}, headers=AUTH),
                      400, "bad_caps")
    _short_json_error(srv.call("PUT", "/queues/c", json={"max_bytes": ["v"] * MB},
                               headers=AUTH), 400, "bad_caps")
    _short_json_error(srv.call("POST", "/admin/snapshot", json={"name": "n" * MB},
                               headers=AUTH), 400, "bad_name")
    _short_json_error(srv.call("POST", "/admin/snapshot", json={"queue": "q" * MB},
                               headers=AUTH), 400, "bad_name")
    _short_json_error(srv.call("POST", "/queues/" + "q" * 3000 + "/batch",
                               json={"payloads": [1]}, headers=AUTH), 400, "bad_name")


def test_huge_headers_and_parameters(srv: servers.Server) -> None:
    _short_json_error(srv.call("GET", "/queues", headers={"Authorization": "Bearer " + "y" * 8000}),
                      401, "unauthorized")
    _short_json_error(srv.call("GET", "/queues/a/dequeue?timeout=" + "9" * 3000, headers=AUTH),
                      400, "bad_timeout")
    _short_json_error(srv.call("GET", "/queues/a/dequeue?max=" + "9" * 3000, headers=AUTH),
                      400, "bad_max")
    r = srv.call("POST", "/queues/a/enqueue", body=b'{"payload": 1}',
                 headers={**AUTH, "Content-Type": "z" * 7000})
    assert r.status < 500, r
    assert len(r.body) < SHORT, r
    _parser_error(srv, b"GET /queues HTTP/1.1\r\nHost: a\r\nX-Bad: " + b"y" * MB + b"\r\n\r\n",
                  b"431")
    _parser_error(srv, b"GET /queues HTTP/1.1\r\nHost: a\r\n" + b"X-H: 1\r\n" * 200_000
                  + b"\r\n", b"4")
    assert srv.call("GET", "/health").status == 200
