"""Key names. The namespace is the prefix; a queue's keys share the hash tag
``{ns:queue}`` so each queue (and every script on it) lives on one Cluster slot.

Queue names are ``[A-Za-z0-9_.-]`` and namespaces ``[A-Za-z0-9_-]``, so neither
can contain ``:`` or a brace and a key never reads two ways.
"""

from __future__ import annotations

import functools

# the order of the scripts' KEYS (see lua/common.lua)
QUEUE_PARTS = ("meta", "r", "z", "l", "x", "o", "s", "i", "v")
OUTBOX = QUEUE_PARTS.index("o")


@functools.lru_cache(maxsize=4096)
def queue(namespace: str, name: str) -> tuple[bytes, ...]:
    """The queue's keys in the scripts' KEYS order, encoded once (every call passes them)."""
    tag = f"{{{namespace}:{name}}}"
    return tuple(f"{tag}:{part}".encode() for part in QUEUE_PARTS)


def registry(namespace: str) -> list[str]:
    """The namespace's own keys: queue table, defaults, process counters."""
    tag = f"{{{namespace}}}"
    return [f"{tag}:queues", f"{tag}:meta", f"{tag}:counters"]


def channel(namespace: str) -> str:
    return f"zoldyq:{namespace}:bell"


def pattern(namespace: str) -> str:
    """Matches every key of the namespace (for destroy's sweep)."""
    return f"{{{namespace}[:}}]*"
