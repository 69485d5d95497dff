"""Pause points for crash tests.

A process started with ``ZOLDYQ_TEST_PAUSE=<point>`` stops the first time it
reaches ``<point>`` (e.g. ``put.written``: records written, tail not yet
committed), writes ``<point>`` plus its pid to the file named by
``ZOLDYQ_TEST_PAUSE_FILE`` and sleeps until it is killed. A test can thus
``kill -9`` a process at an exact step of the protocol.

Callers check ``ENABLED`` (fixed when the process starts) before calling
``reach``, so an unset point costs one global read.
"""

from __future__ import annotations

import os
import time

_pause_at: str | None = os.environ.get("ZOLDYQ_TEST_PAUSE") or None
ENABLED = _pause_at is not None


def reach(point: str) -> None:
    """Stop here for good if ``point`` is the pause point (the first time only)."""
    global _pause_at
    if point != _pause_at:
        return
    _pause_at = None  # once
    marker = os.environ.get("ZOLDYQ_TEST_PAUSE_FILE")
    if marker:
        tmp = f"{marker}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(f"{point} {os.getpid()}\n")
        os.rename(tmp, marker)
    while True:
        time.sleep(3600)
