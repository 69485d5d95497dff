"""Leasing consumers kill -9ed at random while producers run: nothing lost, nothing acked twice."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import zoldyq
from tests.helpers.multiproc import spawn
from tests.helpers.procs import read_acks, read_pairs

PURE = {**os.environ, "ZOLDYQ_PURE_PYTHON": "1"}
COMPILED = {k: v for k, v in os.environ.items() if k != "ZOLDYQ_PURE_PYTHON"}


def test_killed_leasing_consumers_lose_nothing(namespace: str, tmp_path: Path,
                                                procs: list[subprocess.Popen[bytes]]) -> None:
    """Every message is acked exactly once (or dead-lettered); a message is seen twice only
    when a lease expired (a killed consumer's), never more often than redeliveries. The
    consumers alternate between the compiled path and the pure one (one side table, two
    implementations of its lease and ack), so kills land inside either."""
    broker = zoldyq.create(namespace, max_bytes=4 << 20)
    q = broker.create_queue("jobs", max_messages=20_000, max_bytes=4 << 20, max_deliveries=50)
    per_producer, producers = 3000, 2
    stop = tmp_path / "stop"
    outs: list[Path] = []

    def start_consumer() -> subprocess.Popen[bytes]:
        out = tmp_path / f"c{len(outs)}.bin"
        outs.append(out)
        env = PURE if len(outs) % 2 else COMPILED
        p = spawn("leaser", namespace, "jobs", out, stop, 0.5, env=env)
        procs.append(p)
        return p

    for tag in range(producers):
        procs.append(spawn("producer", namespace, "jobs", tag, per_producer,
                           tmp_path / f"p{tag}.ack"))
    consumers = [start_consumer() for _ in range(3)]
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        acked = sum(read_acks(str(tmp_path / f"p{t}.ack"))[0] for t in range(producers))
        if acked == per_producer * producers and kills >= 8:
            break
        time.sleep(rng.uniform(0.1, 0.3))
        victim = consumers.pop(rng.randrange(len(consumers)))
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        kills += 1
        consumers.append(start_consumer())
    stop.touch()
    end = time.monotonic() + 30
    while time.monotonic() < end:  # survivors drain, including the dead ones' leases
        stats = q.stats()
        if stats["size"] == 0 and stats["inflight"] == 0:
            break
        time.sleep(0.1)
    for p in consumers:
        p.wait(30)
    total = per_producer * producers
    seen = Counter(pair for out in outs for pair in read_pairs(str(out)))
    dead = {tuple(m.payload) for m in broker.queue("jobs.dlq").peek()} \
        if "jobs.dlq" in broker.queues() else set()
    everything = {(t, s) for t in range(producers) for s in range(per_producer)}
    assert set(seen) | dead == everything, f"lost {len(everything - set(seen) - dead)}"
    stats = q.stats()
    assert stats["acked_total"] + len(dead) == total
    assert (stats["size"], stats["inflight"], stats["delayed"]) == (0, 0, 0)
    duplicates = sum(n - 1 for n in seen.values())
    assert duplicates <= stats["redelivered_total"] + len(dead)
    assert kills >= 8
    broker.close()
