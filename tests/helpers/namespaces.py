"""Unique namespace names: ``zqt<pid>x<n>``, so parallel runs never collide."""

from __future__ import annotations

import itertools
import os

_counter = itertools.count()


def unique_namespace() -> str:
    return f"zqt{os.getpid()}x{next(_counter)}"
