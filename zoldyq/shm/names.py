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
    """The registry segment, its lock file and its semaphore share this base."""
    return f"/{PREFIX}.{ns}"


def registry_lockfile(ns: str) -> str:
    return f"/{PREFIX}.{ns}.lk"


def queue_base(ns: str, slot: int, gen: int) -> str:
    return f"/{PREFIX}.{ns}.q{slot}.{gen}"


def queue_objects(ns: str, slot: int, gen: int) -> dict[str, str]:
    """Every POSIX object of one queue: shared memory and semaphores by role."""
    base = queue_base(ns, slot, gen)
    return {
        "ring": base,  # shm: header + byte ring
        "put_file": base + ".pl",  # shm, empty: flock'ed by the put side
        "get_file": base + ".gl",  # shm, empty: flock'ed by the get side
        "put_sem": base + ".ps",  # semaphore guarding the put side
        "get_sem": base + ".gs",  # semaphore guarding the get side
        "bell": base + ".bell",  # doorbell semaphore consumers wait on
    }
