"""``GET /health``: the roadmap's shape when the namespace works, 503 and a reason when not.

"Works" means more than "the registry is mapped": every lock of the
namespace must be obtainable. Locks survive the death of their holder (the
next holder repairs), but not a holder that is alive and stuck (stopped,
or wedged in a debugger), nor a repair that fails on corrupt data.

The locks are probed off the request path: a background thread per
namespace takes each lock in turn, round after round (every
``PROBE_EVERY`` s while anyone asks, stopping after ``IDLE_STOP`` s
without a question), and ``check`` only reads what it found. So a stuck
lock never blocks the asking thread (an event loop, whose other requests
would wait with it): the answer is 503 as soon as the probe has waited
``LOCK_TIMEOUT`` for one lock, and 200 again once a round completes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from zoldyq.api import Broker
from zoldyq.errors import QueueNotFound, ZoldyQError
from zoldyq.ops.metrics import uptime_seconds

LOCK_TIMEOUT = 1.0
PROBE_EVERY = 0.25
IDLE_STOP = 30.0

_probes: dict[str, _Probe] = {}
_probes_lock = threading.Lock()


def check(broker: Broker, lock_timeout: float = LOCK_TIMEOUT) -> tuple[int, dict[str, Any]]:
    """Return (HTTP status, body) for ``broker``'s namespace, at once (see the module doc)."""
    extra: dict[str, Any] = {}  # shm answers the seed's shape exactly
    ping = getattr(broker, "ping", None)  # engines with a server to reach (Redis)
    try:
        if ping is not None:
            extra["backend"] = {"engine": getattr(broker, "engine", "?"),
                                "url": getattr(broker, "safe_url", "")}
            extra["backend"]["latency_ms"] = round(ping() * 1000, 3)
        if broker.destroyed:
            return _unhealthy(f"namespace '{broker.namespace}' was destroyed")
        reason = _probe(broker).verdict(lock_timeout)
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
        return _unhealthy(str(ex), **extra)
    return 200, {
        **extra,
        "status": "healthy",
        "uptime_seconds": int(uptime_seconds(broker)),
        "total_queues": len(queues),
        "queues": queues,
    }


_DELIVERY = ("inflight", "delayed", "acked_total", "redelivered_total", "dead_lettered_total",
             "oldest_age_seconds")


def _unhealthy(reason: str, **extra: Any) -> tuple[int, dict[str, Any]]:
    return 503, {"status": "unhealthy", "reason": reason, **extra}


class _Probe(threading.Thread):
    """Takes every lock the engine names (``Broker.locks``), round after round."""

    def __init__(self, broker: Broker) -> None:
        super().__init__(name=f"zoldyq-health-{broker.namespace}", daemon=True)
        self.broker = broker
        self.asked_at = time.monotonic()
        self.waiting: tuple[str, float] | None = None  # (which lock, since when): one store
        self.reason: str | None = None  # what the last finished round found

    def run(self) -> None:
        try:
            while time.monotonic() - self.asked_at < IDLE_STOP and not self.broker.interrupted:
                self.reason = self._round()
                self.waiting = None
                time.sleep(PROBE_EVERY)
        finally:
            with _probes_lock:
                if _probes.get(self.broker.namespace) is self:
                    del _probes[self.broker.namespace]

    def _round(self) -> str | None:
        what = "the namespace's locks"
        try:
            for what, lock in self.broker.locks():
                self._take(what, lock)
        except (ZoldyQError, OSError) as ex:
            return f"{what} cannot be recovered: {ex}"
        return None

    def _take(self, what: str, lock: Any) -> None:
        self.waiting = (what, time.monotonic())
        with lock:
            pass

    def verdict(self, timeout: float) -> str | None:
        """What the probe knows now, without waiting for it."""
        self.asked_at = time.monotonic()
        waiting = self.waiting
        if waiting is not None:
            held = time.monotonic() - waiting[1]
            if held >= timeout:
                return f"{waiting[0]} has been held for {held:.1f} s (a stuck process?)"
        return self.reason


def _probe(broker: Broker) -> _Probe:
    """The probe running for this namespace, or a new one."""
    with _probes_lock:
        probe = _probes.get(broker.namespace)
        if probe is None or probe.broker is not broker:
            probe = _probes[broker.namespace] = _Probe(broker)
            probe.start()
        return probe
