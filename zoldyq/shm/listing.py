"""This host's namespaces as ``/dev/shm`` shows them (``zoldyq namespaces``, ``destroy``).

A namespace is its registry segment ``/dev/shm/zoldyq.<ns>`` plus one
segment per queue ``zoldyq.<ns>.q<slot>.<gen>`` (and semaphores
``sem.zoldyq.<ns>...``). Its processes are those that map one of its segments
(``/proc/<pid>/maps``, readable for this user's processes): the server's
workers and sidecar, and local clients.
"""

from __future__ import annotations

import contextlib
import os
import pwd
from typing import Any

from zoldyq.shm import names, owner, segment

_PREFIX = names.PREFIX + "."


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def namespaces() -> list[dict[str, Any]]:
    """Each namespace on this host: name, user, bytes in use, queues, attached pids, and the
    pid of the server that owns it (None: no live server)."""
    try:
        entries = sorted(os.listdir(segment.SHM_DIR))
    except OSError:
        return []
    found: dict[str, dict[str, Any]] = {}
    for entry in entries:
        bare = entry.removeprefix("sem.")
        if not bare.startswith(_PREFIX):
            continue
        rest = bare[len(_PREFIX):]
        ns, _, tail = rest.partition(".")
        try:
            st = os.stat(os.path.join(segment.SHM_DIR, entry))
        except OSError:
            continue  # removed meanwhile
        row = found.setdefault(ns, {"namespace": ns, "user": _user(st.st_uid), "bytes": 0,
                                    "queues": set(), "registry": False, "pids": []})
        row["bytes"] += st.st_blocks * 512
        if entry == bare and not tail:
            row["registry"] = True
        elif tail.startswith("q"):
            row["queues"].add(tail.split(".")[0])  # q<slot>: its ring, locks and bell
    attached = _attached()
    for ns, row in found.items():
        row["pids"] = sorted(attached.get(ns, ()))
        row["server"] = owner.holder(ns)  # the live server that owns it (kernel-tracked)
        row["queues"] = len(row["queues"])
    return [row for row in found.values() if row["registry"]]


def _attached() -> dict[str, set[int]]:
    """namespace -> pids mapping one of its segments (what this user may read)."""
    out: dict[str, set[int]] = {}
    marker = os.path.join(segment.SHM_DIR, _PREFIX)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                at = line.find(marker)
                if at >= 0:
                    ns = line[at + len(marker):].split(".", 1)[0].split()[0]
                    out.setdefault(ns, set()).add(int(pid))
    return out
