"""Many separately started interpreters on one queue: FIFO, no loss, no duplicates."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

import zoldyq
from tests.helpers.multiproc import check_fifo, spawn
from tests.helpers.procs import read_acks, read_pairs


@pytest.mark.slow
def test_four_producers_four_consumers_exactly_once(
    namespace: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """200 000 messages from 4 processes reach 4 processes each exactly once, in order."""
    producers, per_producer = 4, 50_000
    broker = zoldyq.create(namespace, max_messages=20_000, max_bytes=4 << 20)
    broker.create_queue("mp", max_messages=20_000, max_bytes=4 << 20)
    stop = tmp_path / "stop"
    outs = [tmp_path / f"out{i}" for i in range(4)]
    for i in range(4):
        procs.append(spawn("consumer", namespace, "mp", outs[i], stop, 100))
    for tag in range(producers):
        procs.append(spawn("producer", namespace, "mp", tag, per_producer, tmp_path / f"ack{tag}"))
    for p in procs[4:]:
        assert p.wait(240) == 0
    stop.touch()
    for p in procs[:4]:
        assert p.wait(60) == 0
    streams = [read_pairs(str(o)) for o in outs]
    received = Counter(pair for s in streams for pair in s)
    expected = {(tag, seq) for tag in range(producers) for seq in range(per_producer)}
    assert set(received) == expected
    assert max(received.values()) == 1
    assert all(len(s) > 0 for s in streams)  # the work was shared
    check_fifo(streams)
    stats = broker.queue("mp").stats()
    assert (stats["size"], stats["enqueued_total"], stats["dequeued_total"]) == (
        0, 200_000, 200_000)
    broker.close()


def test_unrelated_interpreters_attach_by_name(namespace: str) -> None:
    """A second interpreter started on its own sees the queues of the first."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    broker.queue("shared").put({"from": "parent"})
    code = (
        "import zoldyq, json, sys\n"
        f"b = zoldyq.attach({namespace!r})\n"
        "q = b.queue('shared')\n"
        "print(json.dumps(q.get().payload))\n"
        "q.put({'from': 'child'})\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                         timeout=60)
    assert out.stdout.strip() == b'{"from": "parent"}'
    msg = broker.queue("shared").get()
    assert msg is not None
    assert msg.payload == {"from": "child"}
    broker.close()


def test_blocked_consumer_in_another_process_wakes_on_put(
    namespace: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """A consumer process parked on the doorbell receives a put from this process."""
    broker = zoldyq.create(namespace, max_bytes=1 << 20)
    broker.create_queue("bell")
    out, stop = tmp_path / "out", tmp_path / "stop"
    procs.append(spawn("consumer", namespace, "bell", out, stop, 1))
    deadline = time.monotonic() + 30
    while broker.queue("bell").stats()["waiters"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    broker.queue("bell").put([7, 1])
    deadline = time.monotonic() + 5
    while not read_pairs(str(out)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert read_pairs(str(out)) == [(7, 1)]
    stop.touch()
    assert procs[0].wait(10) == 0
    broker.close()


def test_ack_file_helpers_read_partial_files(tmp_path: Path) -> None:
    """The progress readers tolerate missing and truncated files (a killed writer)."""
    assert read_acks(str(tmp_path / "none")) == (0, 0)
    (tmp_path / "half").write_bytes(b"\x01\x00\x00")
    assert read_pairs(str(tmp_path / "half")) == []
