"""Start worker processes (``python -m tests.helpers.procs``) and check what they saw."""

from __future__ import annotations

import subprocess
import sys
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
