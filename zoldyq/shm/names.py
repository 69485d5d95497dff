"""POSIX object names, built from the namespace, a registry slot and a generation.

Queue names are user input and never reach a POSIX name: a queue lives at
``/zoldyq.<ns>.q<slot>.<gen>``, so a queue deleted and re-created in the same
slot gets new objects and an old handle can never open the new ones.
"""

from __future__ import annotations

from zoldyq.api import check_namespace, check_queue_name

__all__ = ["PREFIX", "check_namespace", "check_queue_name"]

PREFIX = "zoldyq"


def registry(ns: str) -> str:
    """The registry segment (its lock is in its header)."""
    return f"/{PREFIX}.{ns}"


def queue_base(ns: str, slot: int, gen: int) -> str:
    return f"/{PREFIX}.{ns}.q{slot}.{gen}"


def queue_objects(ns: str, slot: int, gen: int) -> dict[str, str]:
    """Every POSIX object of one queue by role (its locks are in the ring's header)."""
    base = queue_base(ns, slot, gen)
    return {
        "ring": base,  # shm: header + byte ring + side table
        "bell": base + ".bell",  # doorbell semaphore consumers wait on
    }
