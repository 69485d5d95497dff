"""Prometheus metrics read from shared memory at scrape time.

Queue figures come straight from each queue's header words and the
process-level ones from ``zoldyq.shm.counters``, so any process of the
namespace (any HTTP worker, the sidecar, a local tool) exposes the same
numbers and no ``PROMETHEUS_MULTIPROC_DIR`` is needed. Histograms are the
engine's per-bucket counts made cumulative, with ``le`` from 10 µs to 1 s.

prometheus-client appends ``_total`` to counter families itself, so the
families below are named without it; the exposed names are the contract.

Writers: the HTTP shells count each request under its ``request_key`` (via
``http.ops.counter``); the WebSocket sidecar sets its open-connection count
with ``broker.counters().set(WS_CONNECTIONS_KEY, n)`` (on each watchdog tick, and
0 when it stops), so a restarted sidecar never leaves a stale figure.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from zoldyq.api import HIST_BOUNDS, Broker, Counters
from zoldyq.errors import ZoldyQError
from zoldyq.settings import STARTED_AT_ENV

__all__ = ["CONTENT_TYPE", "QueueCollector", "exposition", "registry", "request_key"]

# The classic text format, which every Prometheus reads (generate_latest writes it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
HTTP_KEY = "http"
WS_CONNECTIONS_KEY = "ws_connections"  # the sidecar's open connections, a gauge

# (family name without _total, stats key, help): counters per queue
_QUEUE_COUNTERS = (
    ("zoldyq_enqueued", "enqueued_total", "Messages enqueued"),
    ("zoldyq_dequeued", "dequeued_total", "Messages dequeued (cleared ones excluded)"),
    ("zoldyq_queue_full", "queue_full_total", "Enqueues rejected because the queue was full"),
    ("zoldyq_dequeue_timeout", "dequeue_timeout_total", "Waiting dequeues that timed out empty"),
    ("zoldyq_cleared", "cleared_total", "Messages dropped by clear"),
    ("zoldyq_acked", "acked_total", "Leased messages acknowledged"),
    ("zoldyq_redelivered", "redelivered_total",
     "Leased messages given back (nack, expiry, a consumer that left) to be delivered again"),
    ("zoldyq_dead_lettered", "dead_lettered_total",
     "Messages moved to the dead-letter queue after max_deliveries"),
)
_QUEUE_GAUGES = (
    ("zoldyq_queue_size", "size", "Messages in the queue"),
    ("zoldyq_queue_capacity", "capacity", "Most messages the queue holds"),
    ("zoldyq_queue_bytes", "bytes", "Ring bytes in use"),
    ("zoldyq_queue_max_bytes", "max_bytes", "Ring bytes the queue may use"),
    ("zoldyq_queue_waiting_consumers", "waiters", "Consumers blocked waiting for a message"),
    ("zoldyq_queue_inflight", "inflight", "Leased messages not yet acked"),
    ("zoldyq_queue_delayed", "delayed", "Messages waiting for their delay or deliver_at"),
    ("zoldyq_queue_oldest_message_age_seconds", "oldest_age_seconds",
     "Age of the oldest ready message (consumer lag); 0 when empty"),
)
_HISTOGRAMS = (
    ("zoldyq_enqueue_duration_seconds", "enqueue_histogram", "Enqueue latency"),
    ("zoldyq_dequeue_duration_seconds", "dequeue_histogram", "Dequeue latency"),
)
_LE = [floatToGoString(b) for b in HIST_BOUNDS] + ["+Inf"]  # type: ignore[no-untyped-call]


def cumulative_buckets(hist: list[int]) -> tuple[list[tuple[str, float]], float]:
    """Engine histogram (per-bucket counts, then the sum in ns) -> (le buckets, sum in s)."""
    buckets, total = [], 0
    for le, n in zip(_LE, hist[: len(_LE)], strict=True):
        total += n
        buckets.append((le, float(total)))
    return buckets, hist[len(_LE)] / 1e9


METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"})


def request_key(method: str, route: str | None, status: int) -> str:
    """The shared-counter key of one HTTP request.

    Every label takes few values by construction, so no client can fill the
    shared counter slots and hide the series that matter (a 429, any 5xx):
    ``route`` is a route table name or ``unmatched``, a method outside
    ``METHODS`` counts as ``other``, a status is one this server answers.
    """
    if method not in METHODS:
        method = "other"
    return f"{HTTP_KEY} {method} {route or 'unmatched'} {status}"


class QueueCollector:
    """Collects every queue's figures and the namespace-wide process figures."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._counters: Counters | None = None

    def _shared_counters(self) -> dict[str, int]:
        if self._counters is None:
            try:
                self._counters = self.broker.counters(create=False)
            except FileNotFoundError:
                return {}  # nobody counted anything yet
        return self._counters.items()

    def queue_stats(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.broker.entries():
            with contextlib.suppress(ZoldyQError):  # deleted while we looked
                out.append(self.broker.queue(entry.name).stats())
        return out

    def collect(self) -> Iterator[Metric]:
        stats = self.queue_stats()
        for name, key, doc in _QUEUE_GAUGES:
            g = GaugeMetricFamily(name, doc, labels=["queue"])
            for s in stats:
                g.add_metric([s["name"]], s[key])
            yield g
        for name, key, doc in _QUEUE_COUNTERS:
            c = CounterMetricFamily(name, doc, labels=["queue"])
            for s in stats:
                c.add_metric([s["name"]], s[key])
            yield c
        for name, key, doc in _HISTOGRAMS:
            h = HistogramMetricFamily(name, doc, labels=["queue"])
            for s in stats:
                buckets, total = cumulative_buckets(s[key])
                h.add_metric([s["name"]], buckets, total)
            yield h
        yield from self._namespace_metrics(len(stats))

    def _namespace_metrics(self, queues: int) -> Iterator[Metric]:
        broker = self.broker
        yield GaugeMetricFamily("zoldyq_queues", "Queues in the namespace", value=queues)
        yield GaugeMetricFamily(
            "zoldyq_max_queues", "Most queues the namespace holds", value=broker.max_queues
        )
        yield GaugeMetricFamily(
            "zoldyq_uptime_seconds",
            "Seconds since the server started",
            value=uptime_seconds(broker),
        )
        free = self.broker.free_bytes()
        if free is not None:  # None: the engine's memory is not /dev/shm (Redis)
            yield GaugeMetricFamily("zoldyq_shm_free_bytes", "Bytes free in /dev/shm", value=free)
        shared = self._shared_counters()
        requests = CounterMetricFamily(
            "zoldyq_http_requests", "HTTP requests by route and status",
            labels=["method", "route", "status"],
        )  # fmt: skip
        for key, value in sorted(shared.items()):
            parts = key.split(" ")
            if parts[0] == HTTP_KEY and len(parts) == 4:
                requests.add_metric(parts[1:], value)
        yield requests
        yield GaugeMetricFamily(
            "zoldyq_websocket_connections",
            "Open WebSocket connections",
            value=max(0, shared.get(WS_CONNECTIONS_KEY, 0)),
        )


def uptime_seconds(broker: Broker) -> float:
    """Since the server started (``ZOLDYQ_STARTED_AT``, the same in every worker), else
    since the namespace was created."""
    try:
        started = float(os.environ.get(STARTED_AT_ENV) or "")
    except ValueError:
        started = broker.created_at / 1e6
    return max(0.0, time.time() - started)


def registry(broker: Broker) -> CollectorRegistry:
    """A registry with the queue collector and this process's ``process_*`` figures."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(QueueCollector(broker))
    ProcessCollector(registry=reg)  # process_open_fds, memory, CPU of the answering process
    return reg


def exposition(reg: CollectorRegistry) -> bytes:
    """The Prometheus text format (``CONTENT_TYPE``)."""
    return generate_latest(reg)
