"""Snapshots: every queue (or one) written to a file and loaded back, on any engine.

``format`` is the file's bytes (pure); ``store`` saves and loads against a Broker.
"""

from zoldyq.ops.snapshot.format import HEADER, QueueImage, decode, encode
from zoldyq.ops.snapshot.store import (
    SUFFIX,
    clean_partial,
    default_name,
    load,
    on_exit,
    on_start,
    path_for,
    read,
    restore,
    save,
    save_all,
)

__all__ = [
    "HEADER", "SUFFIX", "QueueImage", "clean_partial", "decode", "default_name", "encode",
    "load", "on_exit", "on_start", "path_for", "read", "restore", "save", "save_all",
]  # fmt: skip
