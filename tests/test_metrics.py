"""Prometheus metrics read from shared memory: exact values, names, histograms, promtool."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import zoldyq
from tests.helpers.prom import value
from zoldyq import settings as settings_mod
from zoldyq.ops import metrics
from zoldyq.shm.counters import Counters
from zoldyq.shm.layout import HIST_BOUNDS

CONTRACT = {
    "zoldyq_queue_size": "gauge",
    "zoldyq_queue_capacity": "gauge",
    "zoldyq_queue_bytes": "gauge",
    "zoldyq_enqueued_total": "counter",
    "zoldyq_dequeued_total": "counter",
    "zoldyq_queue_full_total": "counter",
    "zoldyq_dequeue_timeout_total": "counter",
    "zoldyq_queue_inflight": "gauge",
    "zoldyq_queue_delayed": "gauge",
    "zoldyq_acked_total": "counter",
    "zoldyq_redelivered_total": "counter",
    "zoldyq_dead_lettered_total": "counter",
    "zoldyq_queue_oldest_message_age_seconds": "gauge",
    "zoldyq_enqueue_duration_seconds": "histogram",
    "zoldyq_dequeue_duration_seconds": "histogram",
    "zoldyq_http_requests_total": "counter",
    "zoldyq_websocket_connections": "gauge",
    "zoldyq_uptime_seconds": "gauge",
    "zoldyq_shm_free_bytes": "gauge",
    "process_open_fds": "gauge",
}


def scrape(broker: zoldyq.Broker) -> str:
    return metrics.exposition(metrics.registry(broker)).decode()


def types(text: str) -> dict[str, str]:
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def test_exact_values_after_known_traffic(broker: zoldyq.Broker) -> None:
    """Every per-queue figure matches the traffic that was sent, exactly."""
    broker.create_queue("q", max_messages=3)
    q = broker.queue("q")
    q.put_many([1, 2, 3])
    with pytest.raises(zoldyq.QueueFull):
        q.put(4)
    assert len(q.get_many(2)) == 2
    assert q.get() is not None
    assert q.get(timeout=0.01) is None
    q.put_bytes(b"12345")
    text = scrape(broker)
    lab = {"queue": "q"}
    assert value(text, "zoldyq_enqueued_total", **lab) == 4
    assert value(text, "zoldyq_dequeued_total", **lab) == 3
    assert value(text, "zoldyq_queue_full_total", **lab) == 1
    assert value(text, "zoldyq_dequeue_timeout_total", **lab) == 1
    assert value(text, "zoldyq_queue_size", **lab) == 1
    assert value(text, "zoldyq_queue_capacity", **lab) == 3
    assert value(text, "zoldyq_queue_bytes", **lab) == 4 + 8  # record header + padded payload
    assert q.clear() == 1
    text = scrape(broker)
    assert value(text, "zoldyq_cleared_total", **lab) == 1
    assert value(text, "zoldyq_dequeued_total", **lab) == 3  # a clear is not a dequeue
    assert value(text, "zoldyq_queue_size", **lab) == 0
    assert value(text, "zoldyq_queues") == 1


def test_reliable_delivery_figures(broker: zoldyq.Broker) -> None:
    """inflight, delayed, acked, redelivered, dead-lettered and the lag match the traffic."""
    q = broker.create_queue("r", max_deliveries=1)
    q.put_many(["a", "b", "c"])
    q.put("later", delay=60)
    time.sleep(0.2)
    lab = {"queue": "r"}
    assert value(scrape(broker), "zoldyq_queue_oldest_message_age_seconds", **lab) >= 0.15
    a, b = q.get_many(2, lease=30)
    a.ack()
    assert b.nack() == "r.dlq"
    c = q.get(lease=30)
    assert c is not None
    text = scrape(broker)
    assert value(text, "zoldyq_queue_inflight", **lab) == 1
    assert value(text, "zoldyq_queue_delayed", **lab) == 1
    assert value(text, "zoldyq_acked_total", **lab) == 1
    assert value(text, "zoldyq_dead_lettered_total", **lab) == 1
    assert value(text, "zoldyq_redelivered_total", **lab) == 0
    assert value(text, "zoldyq_queue_oldest_message_age_seconds", **lab) == 0
    assert value(text, "zoldyq_queue_size", queue="r.dlq") == 1
    assert value(text, "zoldyq_max_queues") == 16


def test_exposed_names_are_the_contract(broker: zoldyq.Broker) -> None:
    """The names and types on the wire are exactly the specified ones (no doubled _total)."""
    broker.queue("q").put(1)
    found = types(scrape(broker))
    assert {name: found.get(name) for name in CONTRACT} == CONTRACT
    assert not [n for n in found if n.endswith("_total_total")]


def test_histograms(broker: zoldyq.Broker) -> None:
    """Buckets are cumulative from 10 µs to 1 s; +Inf equals _count equals the calls made."""
    q = broker.queue("q")
    for i in range(20):
        q.put(i)
    q.put_many(range(5))  # one call, one observation
    while q.get_many(7):
        pass
    text = scrape(broker)
    for name, calls in (("zoldyq_enqueue_duration_seconds", 21),
                        ("zoldyq_dequeue_duration_seconds", 4)):  # fmt: skip
        buckets = re.findall(rf'^{name}_bucket{{le="([^"]+)",queue="q"}} (\S+)$', text, re.M)
        assert [float(le) for le, _ in buckets[:-1]] == list(HIST_BOUNDS)
        assert buckets[0][0] == "1e-05"
        assert buckets[-1][0] == "+Inf"
        counts = [float(n) for _, n in buckets]
        assert counts == sorted(counts)
        assert counts[-1] == value(text, f"{name}_count", queue="q") == calls
        engine = q.stats()["enqueue_histogram" if "enqueue" in name else "dequeue_histogram"]
        assert value(text, f"{name}_sum", queue="q") == pytest.approx(engine[-1] / 1e9)
        assert value(text, f"{name}_sum", queue="q") > 0


def test_promtool_accepts_the_output(broker: zoldyq.Broker) -> None:
    """``promtool check metrics`` finds no problem (with queues, requests and WS figures)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test does it)"
    broker.queue("a").put(1)
    broker.queue("b.c-d_e").put_bytes(b"x")
    broker.queue("a").get(timeout=0.001)
    counters = Counters(broker.namespace)
    counters.add(metrics.request_key("POST", "/queues/{name}/enqueue", 200))
    counters.add(metrics.request_key("GET", None, 404))
    counters.add(metrics.WS_CONNECTIONS_KEY, 3)
    counters.close()
    text = scrape(broker)
    done = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                          capture_output=True, timeout=30)  # fmt: skip
    assert (done.returncode, done.stdout + done.stderr) == (0, b"")


def test_forked_processes_adding_new_figures_at_once_keep_every_one(
    broker: zoldyq.Broker,
) -> None:
    """Workers forked with the master's counters (gunicorn's) each add keys never seen
    before, all at once: every key gets its own slot and its exact count. (With the
    parent's descriptor, and so its ``flock``, they wrote keys over each other's.)"""
    counters = Counters(broker.namespace)
    per, kids = 150, []
    for w in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(per):
                    counters.add(metrics.request_key("GET", f"/w{w}/{i}", 200), w + 1)
                code = 0
            finally:
                os._exit(code)
        kids.append(pid)
    assert [os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) for p in kids] == [0] * 4
    counters.close()
    counted = {s.labels["route"]: s.value
               for family in text_string_to_metric_families(scrape(broker))
               for s in family.samples if s.name == "zoldyq_http_requests_total"}
    assert counted == {f"/w{w}/{i}": w + 1 for w in range(4) for i in range(per)}


def test_process_figures_are_shared_by_every_process(broker: zoldyq.Broker) -> None:
    """Requests counted in several processes at once add up exactly, whoever is scraped."""
    code = (
        "import sys; from zoldyq.ops import metrics; from zoldyq.shm.counters import Counters\n"
        "c = Counters(sys.argv[1])\n"
        "for _ in range(500): c.add(metrics.request_key('GET', '/health', 200))\n"
        "c.add(metrics.WS_CONNECTIONS_KEY, 2)\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, broker.namespace]) for _ in range(2)]
    mine = Counters(broker.namespace)
    for _ in range(500):
        mine.add(metrics.request_key("GET", "/health", 200))
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    mine.add(metrics.WS_CONNECTIONS_KEY, -1)
    mine.close()
    text = scrape(broker)
    lab = {"method": "GET", "route": "/health", "status": "200"}
    assert value(text, "zoldyq_http_requests_total", **lab) == 1500
    assert value(text, "zoldyq_websocket_connections") == 3


def test_two_processes_report_the_same_queue_figures(broker: zoldyq.Broker) -> None:
    """A scrape in another process gives the same per-queue samples as one here."""
    for name in ("x", "y"):
        q = broker.queue(name)
        q.put_many(range(10))
        q.get_many(3)
    code = (
        "import sys, zoldyq; from zoldyq.ops import metrics\n"
        "b = zoldyq.attach(sys.argv[1])\n"
        "sys.stdout.write(metrics.exposition(metrics.registry(b)).decode())\n"
    )
    cmd = [sys.executable, "-c", code, broker.namespace]
    theirs = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout

    def queue_lines(text: str) -> list[str]:  # the lag moves on between the two scrapes
        return [line for line in text.splitlines() if 'queue="' in line
                and not line.startswith("zoldyq_queue_oldest_message_age_seconds")]

    assert queue_lines(theirs) == queue_lines(scrape(broker))
    assert len(queue_lines(theirs)) > 40


def test_deleted_queue_disappears(broker: zoldyq.Broker) -> None:
    """A deleted queue is no longer exposed."""
    broker.queue("gone").put(1)
    broker.queue("kept").put(1)
    broker.delete("gone")
    text = scrape(broker)
    assert 'queue="gone"' not in text
    assert value(text, "zoldyq_queue_size", queue="kept") == 1


def test_uptime_and_shm_free(broker: zoldyq.Broker) -> None:
    """Namespace-wide gauges are present and sane."""
    text = scrape(broker)
    assert 0 <= value(text, "zoldyq_uptime_seconds") < 60
    assert value(text, "zoldyq_shm_free_bytes") > 0
    assert value(text, "process_open_fds") > 0


# -- deploy/: the dashboard, Prometheus config and systemd unit use what exists -------------

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (scripts/test does it)"
    return promtool


def _dashboard_exprs() -> list[str]:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if "definition" in v]
    assert len(exprs) > 10
    return exprs


def test_dashboard_uses_only_exposed_metrics(broker: zoldyq.Broker) -> None:
    """Every metric name in the Grafana dashboard is a sample name ZoldyQ exposes."""
    broker.queue("q").put(1)
    broker.queue("q").get()
    counters = Counters(broker.namespace)
    counters.add(metrics.request_key("GET", "health", 200))
    counters.add(metrics.WS_CONNECTIONS_KEY, 1)
    counters.close()
    exposed = {s.name for f in text_string_to_metric_families(scrape(broker)) for s in f.samples}
    used = {m for e in _dashboard_exprs() for m in re.findall(r"\b((?:zoldyq|process)_\w+)", e)}
    assert used
    assert used - exposed == set()
    assert {"zoldyq_queue_size", "zoldyq_enqueued_total", "zoldyq_queue_full_total",
            "zoldyq_enqueue_duration_seconds_bucket"} <= used  # fmt: skip


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses every dashboard query (Grafana variables filled in)."""
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:q{i}", "expr": e.replace("$__rate_interval", "1m")
         .replace("$queue", ".*")}
        for i, e in enumerate(_dashboard_exprs()) if not e.startswith("label_values")
    ]}]}  # fmt: skip
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    done = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True,
                          timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_prometheus_config_and_alerts_are_valid() -> None:
    """deploy/prometheus.yml and its alert rules pass promtool."""
    done = subprocess.run([_promtool(), "check", "config", str(DEPLOY / "prometheus.yml")],
                          capture_output=True, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert b"SUCCESS: 9 rules found" in done.stdout


def test_systemd_unit_runs_a_valid_command() -> None:
    """The unit's ExecStart is ``zoldyq serve`` with flags that ``serve`` accepts."""
    unit = (DEPLOY / "zoldyq.service").read_text()
    (command,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    program, sub, *flags = command.split()
    assert (Path(program).name, sub) == ("zoldyq", "serve")
    serve = argparse.ArgumentParser(exit_on_error=False)
    settings_mod.add_arguments(serve)  # what ``zoldyq serve`` declares
    args = serve.parse_args(flags)
    assert (args.snapshot_on_exit, args.restore) == (True, True)
    assert "Environment=ZOLDYQ_SNAPSHOT_DIR=" in unit
