"""The bearer token never shows on a command line or in a log line, at any level (issue 10, 8)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

from websockets.sync.client import connect

from tests.helpers import servers
from zoldyq.ops import logs
from zoldyq.settings import Settings

TOKEN = "t0ken-that-must-not-leak-4f9a"


def _cmdlines(root: int) -> list[str]:
    """The command lines of ``root`` and all its descendants (children run in own sessions)."""
    parent: dict[int, int] = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        parent[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in family} - family
        family |= more
        grew = bool(more)
    out = []
    for pid in family:
        try:
            out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return out


def test_token_file_keeps_the_token_off_command_lines_and_debug_logs(
    namespace: str, tmp_path: Path
) -> None:
    """``--token-file`` at debug level: no process's cmdline and no log line holds the token.

    The sidecar's debug lines include request paths (``?token=``) and headers
    (``Authorization``); gunicorn's include its configuration.
    """
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    secret.chmod(0o600)
    with servers.serve(namespace, "--token-file", str(secret), log_level="debug") as srv:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert srv.call("POST", "/queues/s/enqueue", json={"payload": 1}, headers=auth
                        ).status == 200
        assert srv.call("GET", "/queues/s/dequeue?token=" + TOKEN).status == 401
        assert srv.call("GET", "/queues").status == 401
        ws = f"ws://127.0.0.1:{srv.ws_port}"
        srv.wait_ready(servers.tcp_ready(srv.ws_port))
        with connect(f"{ws}/queues/s/enqueue?token={TOKEN}") as c:
            c.send('{"payload": 2}')
            c.recv(timeout=10)
        with connect(f"{ws}/queues/s/enqueue", additional_headers=auth) as c:
            c.send('{"payload": 3}')
            c.recv(timeout=10)
        lines = _cmdlines(srv.pid)
        assert len(lines) >= 3  # launcher (gunicorn's master), workers, sidecar
        assert not [line for line in lines if TOKEN in line]
        assert srv.stop(signal.SIGTERM) == 0
        log = srv.log()
    # the sidecar did log the request line and the header, blanked
    assert "< GET /queues/s/enqueue?token=<redacted> HTTP/1.1" in log
    assert "< Authorization: Bearer <redacted>" in log
    assert TOKEN not in log


def test_every_log_line_is_redacted(capsys) -> None:  # type: ignore[no-untyped-def]
    """The configured token, ``?token=`` values and Authorization credentials are blanked."""
    settings = Settings.load(env={"ZOLDYQ_TOKEN": "plain-secret", "ZOLDYQ_LOG_LEVEL": "debug",
                                  "ZOLDYQ_CONFIG": os.devnull},
                             toml_path=None)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.setup(settings)
        log = logging.getLogger("zoldyq.test")
        log.debug("> GET /queues/q/dequeue?token=%s&x=1 HTTP/1.1", "other-secret")
        log.debug("> Authorization: Bearer %s", "header-secret")
        log.info("token is %s", "plain-secret")
        try:
            raise ValueError("plain-secret")
        except ValueError:
            log.exception("failed")
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
    err = capsys.readouterr().err
    for secret in ("other-secret", "header-secret", "plain-secret"):
        assert secret not in err
    assert err.count("<redacted>") >= 4
