"""``GET /health``: the roadmap's shape when the namespace works, 503 and a reason when not.

"Works" means more than "the registry is mapped": every lock of the
namespace must be obtainable. Locks survive the death of their holder (the
next holder repairs), but not a holder that is alive and stuck (stopped,
or wedged in a debugger), nor a repair that fails on corrupt data. A
background probe takes each lock in turn and reports the first that it
cannot get within ``LOCK_TIMEOUT`` (the probe thread is left to finish on
its own; one probe runs at a time per namespace, so stuck probes never
pile up).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from zoldyq.api import Broker
from zoldyq.errors import QueueNotFound, ZoldyQError
from zoldyq.ops.metrics import uptime_seconds

LOCK_TIMEOUT = 1.0

_probes: dict[str, _Probe] = {}
_probes_lock = threading.Lock()


def check(broker: Broker, lock_timeout: float = LOCK_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) for ``broker``'s namespace."""
    try:
        if broker.destroyed:
            return _unhealthy(f"namespace '{broker.namespace}' was destroyed")
        reason = _probe(broker).result(lock_timeout)
        if reason:
            return _unhealthy(reason)
        queues: dict[str, Any] = {}
        for entry in broker.entries():
            try:
                s = broker.queue(entry.name).stats()
            except QueueNotFound:
                continue  # deleted while we looked
            queues[entry.name] = {
                "size": s["size"],
                "capacity": s["capacity"],
                "utilization": round(s["size"] / s["capacity"], 6) if s["capacity"] else 0.0,
                "enqueued_total": s["enqueued_total"],
                "dequeued_total": s["dequeued_total"],
                "queue_full_count": s["queue_full_total"],
                **{k: s.get(k, 0) for k in _DELIVERY},
            }
    except (ZoldyQError, OSError) as ex:
        return _unhealthy(str(ex))
    return 200, {
        "status": "healthy",
        "uptime_seconds": int(uptime_seconds(broker)),
        "total_queues": len(queues),
        "queues": queues,
    }


_DELIVERY = ("inflight", "delayed", "acked_total", "redelivered_total", "dead_lettered_total",
             "oldest_age_seconds")


def _unhealthy(reason: str) -> tuple[int, dict[str, Any]]:
    return 503, {"status": "unhealthy", "reason": reason}


class _Probe(threading.Thread):
    """Takes every lock the engine names (``Broker.locks``), once."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(name=f"zoldyq-health-{broker.namespace}", daemon=True)
        self.broker = broker
        self.started_at = time.monotonic()
        self.waiting_for = "the registry lock"
        self.reason: str | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for what, lock in self.broker.locks():
                self.waiting_for = what
                with lock:
                    pass
        except (ZoldyQError, OSError) as ex:
            self.reason = f"{self.waiting_for} cannot be recovered: {ex}"
        finally:
            with _probes_lock:
                if _probes.get(self.broker.namespace) is self:
                    del _probes[self.broker.namespace]
            self.done.set()

    def result(self, timeout: float) -> str | None:
        if self.done.wait(timeout):
            return self.reason
        held = time.monotonic() - self.started_at
        return f"{self.waiting_for} has been held for {held:.1f} s (a stuck process?)"


def _probe(broker: Broker) -> _Probe:
    """The probe still running for this namespace, or a new one."""
    with _probes_lock:
        probe = _probes.get(broker.namespace)
        if probe is None:
            probe = _probes[broker.namespace] = _Probe(broker)
            probe.start()
        return probe
