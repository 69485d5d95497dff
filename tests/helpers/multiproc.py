"""Start worker processes (``python -m tests.helpers.procs``) and check what they saw."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def spawn(*args: object, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.procs", *map(str, args)],
        cwd=Path(__file__).parents[2], env=env,
    )


def check_fifo(streams: list[list[tuple[int, int]]]) -> None:
    """Each consumer sees every producer's messages in the order they were put."""
    for stream in streams:
        last: dict[int, int] = {}
        for tag, seq in stream:
            assert seq > last.get(tag, -1), f"producer {tag}: {seq} after {last[tag]}"
            last[tag] = seq


def paused(namespace: str, queue: str, op: str, point: str, tmp_path: Path,
           procs: list[subprocess.Popen[bytes]], arg: str = "") -> subprocess.Popen[bytes]:
    """Start ``op`` in a fresh process that stops at ``point``; return once it is there."""
    marker = tmp_path / f"at-{point}"
    env = {**os.environ, "ZOLDYQ_TEST_PAUSE": point, "ZOLDYQ_TEST_PAUSE_FILE": str(marker)}
    proc = spawn("do", namespace, queue, op, arg, env=env)
    procs.append(proc)
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert proc.poll() is None, f"{op} exited before reaching {point}"
        assert time.monotonic() < deadline, f"{op} never reached {point}"
        time.sleep(0.01)
    assert marker.read_text().split()[0] == point
    marker.unlink()
    return proc
