"""The compiled hot path against the pure one: same words, same records, one namespace."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import zoldyq
from tests.helpers.json_text import SEPARATORS, VALUES
from tests.helpers.multiproc import check_fifo, spawn
from tests.helpers.namespaces import unique_namespace
from tests.helpers.procs import read_acks, read_pairs
from tests.helpers.rings import bare_ring
from zoldyq.api import json_items
from zoldyq.errors import QueueFull
from zoldyq.shm import layout, speedups
from zoldyq.shm import queue as shm_queue
from zoldyq.shm.layout import HEADER_BYTES, KIND_BYTES, KIND_JSON, SEQ_MASK, W_HEAD, W_TAIL
from zoldyq.shm.ring import RingFull
from zoldyq.shm.side import LEASED, S_POS

fast = speedups.fast
needs_c = pytest.mark.skipif(fast is None, reason="zoldyq.shm._speedups is not built "
                             "(no compiler, or ZOLDYQ_PURE_PYTHON=1): the C path is untested")


def test_the_c_module_is_built_where_ci_runs() -> None:
    """CI has a compiler: the extension must be there unless the pure path is asked for."""
    if os.environ.get("ZOLDYQ_PURE_PYTHON", "") not in ("", "0"):
        assert fast is None
    else:
        assert fast is not None, "pip install -e . did not build zoldyq/shm/_speedups.c"


@needs_c
def test_the_c_module_uses_the_python_layout() -> None:
    """Every word offset, kind and histogram bound the C code uses is layout.py's."""
    assert fast.LAYOUT["W_TAIL"] == layout.W_TAIL
    assert fast.LAYOUT == speedups._MINE
    assert fast.HIST_BOUNDS_NS == layout.HIST_BOUNDS_NS


def test_the_env_var_forces_the_pure_path() -> None:
    """ZOLDYQ_PURE_PYTHON=1 runs the engine without the C module."""
    code = "from zoldyq.shm import speedups; print(speedups.ENABLED)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "ZOLDYQ_PURE_PYTHON": "1"}, check=True)
    assert out.stdout.strip() == "False"


def now_us() -> int:
    return time.time_ns() // 1000


class Twin:
    """One bytearray ring seen by both paths: the Python Ring and an unlocked C Fast, on
    one clock (``self.clock``, µs) so that both date and size records alike."""

    def __init__(self, size: int, max_messages: int, start: int) -> None:
        self.buf, self.ring = bare_ring(size, max_messages, size // 2 - 16)
        words = self.ring.words
        seq = SEQ_MASK - 2  # sequence numbers wrap during the run
        words[W_TAIL] = words[W_HEAD] = (seq << 32) | start
        self.words = words
        self.fast = fast.Fast(self.buf, "twin")
        self.clock = now_us()

    def put_py(self, records: list[tuple[int, bytes]]) -> bool:
        try:
            tail = self.ring.write(records, self.clock)
        except RingFull:
            return False
        self.ring.commit_tail(tail, len(records), sum(len(p) for _, p in records))
        return True

    def put_c(self, records: list[tuple[int, bytes]]) -> bool:
        """The C put, checked byte for byte (ring and block table) and by its tail word
        against what the Python path writes into a copy of the same buffer."""
        mirror, copy = bare_ring(self.ring.size, 0, 0, bytearray(self.buf))
        try:
            predicted: int | None = copy.write(records, self.clock)
        except RingFull:
            predicted = None
        self.fast.clock_us = self.clock
        try:
            self.fast.put(records, 0)
        except QueueFull:
            assert predicted is None, "C refused what Python accepts"
            return False
        assert self.words[W_TAIL] == predicted
        assert self.buf[HEADER_BYTES:] == mirror[HEADER_BYTES:]
        return True

    def get_py(self, n: int) -> list[tuple[int, bytes]]:
        records, head, nbytes = self.ring.read(n)
        self.ring.commit_head(head, len(records), nbytes)
        return [(k, p) for k, p, _, _ in records]

    def get_c(self, n: int) -> list[tuple[int, bytes]]:
        expected, head, _ = self.ring.read(n)  # reads only
        got = self.fast.take(n, 0, False, False, "tag")
        assert got == [(k, p, ts, "tag") for k, p, ts, _ in expected]
        assert self.words[W_HEAD] == head
        return [(k, p) for k, p, _, _ in got]


payloads = st.binary(max_size=60)
# a twin ring's payloads: short ones, and ones that cross blocks, compact and medium
spanning = st.one_of(payloads, st.integers(300, 4200).map(lambda n: bytes([n % 251]) * n))
kinds = st.sampled_from([KIND_JSON, KIND_BYTES])


class BothPathsAgainstADeque(RuleBasedStateMachine):
    """Puts and gets by either path, in any order, on one ring: a deque's FIFO, and the C
    path writes exactly the bytes, block bases and tail word the Python path would. Rings
    of one block and of several, from any offset; the clock ticks within a compact delta,
    past it, past a medium one, and back; an empty ring rewinds to 0 as a trim does."""

    def __init__(self) -> None:
        super().__init__()
        self.twin: Twin | None = None
        self.model: deque[tuple[int, bytes]] = deque()

    @rule(start=st.integers(0, 1 << 12), size=st.sampled_from([160, 256, 512, 3 * 8192 + 8]))
    def reset(self, start: int, size: int) -> None:
        self.twin = Twin(size, 12, start * 4 % size)
        self.model.clear()

    @rule(step=st.one_of(st.integers(0, 3000), st.integers(130_000, 140_000),
                         st.integers(-2000, -1), st.just(1 << 34)))
    def tick(self, step: int) -> None:
        if self.twin is not None:
            self.twin.clock += step

    @rule(records=st.lists(st.tuples(kinds, spanning), min_size=1, max_size=4), c=st.booleans())
    def put(self, records: list[tuple[int, bytes]], c: bool) -> None:
        if self.twin is None or max(len(p) for _, p in records) > self.twin.ring.size // 2 - 16:
            return
        if (self.twin.put_c if c else self.twin.put_py)(records):
            self.model.extend(records)

    @rule(n=st.integers(1, 5), c=st.booleans())
    def get(self, n: int, c: bool) -> None:
        if self.twin is None:
            return
        got = (self.twin.get_c if c else self.twin.get_py)(n)
        assert got == [self.model.popleft() for _ in range(len(got))]
        assert len(got) == min(n, len(got) + len(self.model))

    @rule()
    def rewind(self) -> None:
        if self.twin is not None and not self.model:
            words = self.twin.words
            words[W_TAIL] &= ~SEQ_MASK
            words[W_HEAD] &= ~SEQ_MASK

    @invariant()
    def counts_agree(self) -> None:
        if self.twin is not None:
            assert self.twin.ring.count() == len(self.model)


BothPathsAgainstADeque.TestCase.settings = settings(max_examples=200, stateful_step_count=60,
                                                    deadline=None)
test_both_paths_against_a_deque = needs_c(BothPathsAgainstADeque.TestCase)


@needs_c
def test_c_refuses_a_full_ring_like_python() -> None:
    """A full ring raises QueueFull with the count and the bytes needed, and counts it."""
    twin = Twin(160, 2, 0)
    assert twin.put_c([(KIND_BYTES, b"a"), (KIND_BYTES, b"b")])
    with pytest.raises(QueueFull) as info:
        twin.fast.put([(KIND_BYTES, b"c")], 0)
    assert (info.value.size, info.value.capacity, info.value.needed_bytes) == (2, 2, 0)
    assert twin.words[layout.W_FULL_TOTAL] == 1
    assert twin.get_c(5) == [(KIND_BYTES, b"a"), (KIND_BYTES, b"b")]
    twin = Twin(160, 2, 100)
    twin.fast.put([(KIND_BYTES, bytes(68))], 0)  # wraps: 60 bytes of padding, 72 at 0
    with pytest.raises(QueueFull) as info:
        twin.fast.put([(KIND_BYTES, bytes(68))], 0)
    assert info.value.needed_bytes == 72


@needs_c
def test_both_paths_date_records_alike_in_every_form() -> None:
    """Both paths read each other's times exact: a record over an empty ring stores its
    block's base, later ones in that block are dated against it (medium hours later, long
    past a medium delta's reach), and the C path stores a new base over an empty ring."""
    twin = Twin(4096, 9, 0)
    for hours, c_bytes in ((3, 16 + 12), (10, 20 + 16)):  # medium, then long
        old = now_us() - hours * 3600_000_000
        twin.ring.commit_tail(twin.ring.write([(KIND_BYTES, b"old")], old), 1, 3)
        assert twin.ring.table[0] == old
        before = now_us()
        twin.fast.put([(KIND_BYTES, b"c-long"), (KIND_JSON, b"2")], 0)
        after = now_us()
        assert twin.ring.used_bytes() == 8 + c_bytes  # the old record is compact
        got = twin.ring.read(3)[0]
        assert got[0][2] == old
        assert before <= got[1][2] == got[2][2] <= after
        assert twin.get_c(3) == [(KIND_BYTES, b"old"), (KIND_BYTES, b"c-long"),
                                 (KIND_JSON, b"2")]
    twin.fast.put([(KIND_BYTES, b"new")], 0)  # empty: C stores the block's base
    ts = twin.ring.read(1)[0][0][2]
    assert twin.ring.table[0] == ts
    assert twin.ring.used_bytes() == 8
    assert twin.get_py(1) == [(KIND_BYTES, b"new")]


@needs_c
def test_a_put_with_the_callers_limit_steps_aside_for_what_its_checks_look_at() -> None:
    """put(records, t0, limit, json_checked) writes a plain batch whole, and hands any batch
    with a record that put_records must look at back as None, nothing written."""
    twin = Twin(512, 9, 0)
    tail = twin.words[W_TAIL]
    for records, json_checked in (
        ([], True),
        (iter([(KIND_BYTES, b"a")]), True),  # read once, by the full path
        ([(KIND_BYTES, b"a"), [KIND_BYTES, b"b"]], True),  # a list, not a (kind, data) tuple
        ([(KIND_BYTES, b"a"), (KIND_JSON, b"1")], False),  # JSON to parse
        ([(3, b"a")], True),  # no kind of ours
        ([(1 << 70, b"a")], True),
        ([(True, b"a")], True),  # not an int
        ([(KIND_BYTES, bytearray(b"a"))], True),  # not bytes
        ([(KIND_BYTES, "a")], True),
        ([(KIND_BYTES, b"a"), (KIND_BYTES, b"x" * 41)], True),  # past the limit
    ):
        assert twin.fast.put(records, 0, 40, json_checked) is None, records
        assert twin.words[W_TAIL] == tail
    assert twin.fast.put([(KIND_BYTES, b"x" * 40), (KIND_JSON, b"1")], 0, 40, True) is not None
    assert twin.get_c(5) == [(KIND_BYTES, b"x" * 40), (KIND_JSON, b"1")]


# -- a batch body's payloads straight from its array -----------------------------------


@needs_c
@settings(max_examples=150, deadline=None)
@given(items=st.lists(st.tuples(VALUES, SEPARATORS), max_size=8),
       between=SEPARATORS,
       pad=st.sampled_from(["", " ", "\n "]), start=st.integers(0, 127))
def test_put_json_writes_what_the_pure_path_would(
    items: list[tuple[object, tuple[str, str]]], between: tuple[str, str], pad: str, start: int,
) -> None:
    """Fast.put_json cuts the elements out of a parsed array and writes them in one call:
    the ring then holds exactly what the pure path (json_items, Ring.write) writes, at
    any offset, wraps included, and the tail the Python planner predicts."""
    texts = [json.dumps(v, separators=s).encode() for v, s in items]
    array = (pad + "[" + pad).encode() + between[0].encode().join(texts) + (pad + "]").encode()
    parsed = orjson.loads(array)
    twin = Twin(1024, 9, start * 8)
    records = [(KIND_JSON, t) for t in json_items(array, parsed)]
    predicted = twin.ring.write(records, now_us()) if records else twin.words[W_TAIL]
    done = twin.fast.put_json(array, len(parsed), 0, 1024)
    if not records:
        assert done is None  # put_records answers an empty batch
    assert twin.words[W_TAIL] == predicted
    assert twin.get_c(9) == records


@needs_c
def test_put_json_steps_aside_or_refuses_with_nothing_written() -> None:
    """An element past the limit (or half the ring) comes back None for put_records' own
    checks; an array that is not whole, or a count other than orjson's, is refused."""
    twin = Twin(512, 9, 0)
    tail = twin.words[W_TAIL]
    assert twin.fast.put_json(b'[1, "%s"]' % (b"x" * 39), 2, 0, 40) is None
    assert twin.fast.put_json(b'["%s"]' % (b"x" * 255), 1, 0, 1000) is None  # half the ring
    for cut in (b"[1, 2", b"[1, 2] [3]"):
        with pytest.raises(ValueError, match=r"^put_json: not a whole JSON array$"):
            twin.fast.put_json(cut, 2, 0, 40)
    with pytest.raises(ValueError, match=r"^put_json: 2 elements, expected 3$"):
        twin.fast.put_json(b"[1, 2]", 3, 0, 40)
    assert twin.words[W_TAIL] == tail
    assert twin.fast.put_json(b'[1, "%s"]' % (b"x" * 38), 2, 0, 40) is not None
    assert twin.get_c(5) == [(KIND_JSON, b"1"), (KIND_JSON, b'"%s"' % (b"x" * 38))]


def test_put_json_items_stores_a_batch_like_put_records(broker: zoldyq.Broker) -> None:
    """A batch body's payloads go in as written on either path, in order, with the same
    receipt and the same refusals as put_records (one too long: none stored); a queue
    with nacked messages in its side table takes the batch too."""
    q = broker.queue("items")
    array = b'[ {"a": [1, 2]}, "x,y" ,3]'
    for _ in (1, 2):  # the first put resolves the handle, the second takes the C call
        r = q.put_json_items(array, orjson.loads(array))
        assert r.queue_size == 3
        assert [m.data for m in q.get_many(10)] == [b'{"a": [1, 2]}', b'"x,y"', b"3"]
    limit = q._sq.max_message_bytes  # type: ignore[union-attr]
    long = b'[1, "%s"]' % (b"x" * limit)
    with pytest.raises(zoldyq.errors.MessageTooLarge):
        q.put_json_items(long, orjson.loads(long))
    assert q.put_json_items(b"[]", []).queue_size == 0
    q.put_many(["a"])
    m = q.get(lease=30)
    assert m is not None
    m.nack()  # the side table now holds a message: C steps aside, queue.py puts
    size = q.put_json_items(b"[1, 2]", [1, 2]).queue_size
    assert q.put_records([(KIND_JSON, b"3")]).queue_size == size + 1  # counted alike
    assert [m.data for m in q.get_many(10)] == [b'"a"', b"1", b"2", b"3"]


def test_put_records_on_a_resolved_handle_checks_like_the_first_put(
        broker: zoldyq.Broker) -> None:
    """Once a handle knows its queue, put_records is one C call: it still refuses invalid
    JSON, unknown kinds and records past max_message_bytes whole, and takes any bytes-like
    payload and pre-checked JSON."""
    q = broker.queue("checks")
    q.put_bytes(b"first")  # the handle now holds its shared queue
    assert q.get() is not None
    limit = q._sq.max_message_bytes  # type: ignore[union-attr]
    for records, error in (
        ([(KIND_BYTES, b"a"), (KIND_JSON, b"{")], zoldyq.errors.InvalidPayload),
        ([(KIND_BYTES, b"a"), (KIND_JSON, b"1 2")], zoldyq.errors.InvalidPayload),
        ([(KIND_BYTES, b"a"), (7, b"a")], zoldyq.errors.InvalidPayload),
        ([(KIND_BYTES, b"a"), (KIND_BYTES, b"x" * (limit + 1))], zoldyq.errors.MessageTooLarge),
    ):
        with pytest.raises(error):
            q.put_records(records)
        assert q.peek() == []
    checked = zoldyq.api.CheckedRecords([(KIND_JSON, b' {"a": 1} ')])
    q.put_records([(KIND_BYTES, bytearray(b"ba")), (KIND_BYTES, memoryview(b"mv"))])
    q.put_records(checked)
    q.put_records([(KIND_JSON, b"[1]"), (KIND_BYTES, b"x" * limit)])
    assert [m.data for m in q.get_many(10)] == [b"ba", b"mv", b' {"a": 1} ', b"[1]",
                                                b"x" * limit]


@needs_c
def test_an_empty_ring_starts_over_at_offset_0_when_the_other_lock_is_free(
        broker: zoldyq.Broker) -> None:
    """Past TRIM_KEEP, a take that drains the ring, or a put that finds it empty, moves both
    offsets back to 0 if the other side's lock is free at once; with that lock held they
    stay, and the FIFO goes on from there either way."""
    q = broker.queue("rewind")
    batch = [(KIND_BYTES, bytes([i]) * 200) for i in range(100)]  # 20.8 KB of ring
    payloads = [d for _, d in batch]
    q.put_records(batch)
    sq = q._sq
    assert sq is not None
    assert sq.fast is not None

    def offsets() -> tuple[int, int]:
        return sq.words[W_TAIL] & SEQ_MASK, sq.words[W_HEAD] & SEQ_MASK

    q.put_records(batch)
    assert [m.data for m in q.get_many(200)] == payloads * 2
    assert offsets() == (0, 0)
    assert sq.words[W_TAIL] >> 32 == 200  # the sequence numbers go on
    q.put_records(batch)
    q.put_records(batch)
    with sq.put_lock:  # a put is under way: the drained ring stays where it is
        assert [m.data for m in q.get_many(200)] == payloads * 2
    assert offsets() == (40_800, 40_800)
    with sq.get_lock:  # a get is under way: the put writes past the tail
        q.put_records(batch)
    assert offsets() == (61_200, 40_800)
    q.put_records(batch)  # not empty: no rewind either
    assert offsets() == (81_600, 40_800)
    assert [m.data for m in q.get_many(100)] == payloads
    assert offsets() == (81_600, 61_200)
    assert [m.data for m in q.get_many(100)] == payloads
    assert offsets() == (0, 0)
    q.put_records(batch)
    assert offsets() == (20_400, 0)  # below TRIM_KEEP: a drain leaves the offsets be
    assert [m.data for m in q.get_many(100)] == payloads
    assert offsets() == (20_400, 20_400)


@needs_c
def test_c_never_returns_a_corrupt_record() -> None:
    """A record that does not parse is a BrokenError, and the head stays where it was."""
    twin = Twin(256, 9, 0)
    twin.put_py([(KIND_BYTES, b"ok")])
    twin.buf[HEADER_BYTES] &= 0xF8  # the tag of the first record: no such kind
    head = twin.words[W_HEAD]
    with pytest.raises(zoldyq.errors.BrokenError, match="bad record"):
        twin.fast.take(1, 0, False, False, None)
    assert twin.words[W_HEAD] == head


@needs_c
def test_a_released_handle_is_closed() -> None:
    """After release() (the queue is closing) every call is a ClosedError, never a crash."""
    twin = Twin(256, 9, 0)
    twin.fast.release()
    with pytest.raises(zoldyq.errors.ClosedError):
        twin.fast.put_one(KIND_BYTES, b"x", 0)
    with pytest.raises(zoldyq.errors.ClosedError):
        twin.fast.take(1, 0, False, False, None)


@needs_c
def test_processes_on_both_paths_share_one_queue(
    namespace: str, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Producers and consumers on the C and the pure path, mixed on one queue: every
    message exactly once, in each producer's order."""
    broker = zoldyq.create(namespace, max_messages=2_000, max_bytes=1 << 20)
    broker.create_queue("mix", max_messages=2_000, max_bytes=1 << 20)
    pure = {**os.environ, "ZOLDYQ_PURE_PYTHON": "1"}
    c = {k: v for k, v in os.environ.items() if k != "ZOLDYQ_PURE_PYTHON"}
    stop = tmp_path / "stop"
    outs = [tmp_path / f"out{i}" for i in range(2)]
    per = 10_000
    for i, env in enumerate((pure, c)):
        procs.append(spawn("consumer", namespace, "mix", outs[i], stop, 1 + 49 * i, env=env))
    for tag, env in enumerate((c, pure)):
        procs.append(spawn("producer", namespace, "mix", tag, per, tmp_path / f"ack{tag}",
                           env=env))
    for p in procs[2:]:
        assert p.wait(120) == 0
    stop.touch()
    for p in procs[:2]:
        assert p.wait(60) == 0
    streams = [read_pairs(str(o)) for o in outs]
    received = Counter(pair for s in streams for pair in s)
    assert set(received) == {(t, s) for t in range(2) for s in range(per)}
    assert max(received.values()) == 1
    check_fifo(streams)
    assert [read_acks(str(tmp_path / f"ack{t}"))[0] for t in range(2)] == [per, per]
    broker.close()


@needs_c
def test_shared_counters_count_exactly_from_many_processes_without_a_lock(namespace: str) -> None:
    """Four processes adding to one shared counter by atomic adds lose no increment."""
    from zoldyq.shm.counters import Counters

    zoldyq.create(namespace).close()
    Counters(namespace).add("hits", 0)  # the key exists: adds take the lock-free path
    code = ("import sys; from zoldyq.shm.counters import Counters\n"
            "c = Counters(sys.argv[1])\n"
            "for _ in range(20_000): c.add('hits')\n")
    env = {k: v for k, v in os.environ.items() if k != "ZOLDYQ_PURE_PYTHON"}
    workers = [subprocess.Popen([sys.executable, "-c", code, namespace], env=env)
               for _ in range(4)]
    assert [w.wait(120) for w in workers] == [0, 0, 0, 0]
    counters = Counters(namespace, create=False)
    assert counters.items()["hits"] == 80_000
    counters.close()


@needs_c
def test_the_c_path_steps_aside_for_the_side_table(broker: zoldyq.Broker) -> None:
    """A nacked message goes back at the head: the C path defers to queue.py, which
    hands it out before the ring's, and takes over again once the side is empty."""
    q = broker.queue("side")
    q.put_many(["a", "b", "c"])
    m = q.get(lease=30)
    assert m is not None
    assert m.payload == "a"
    m.nack()
    fast = q._sq.fast  # type: ignore[union-attr]
    assert fast.take(10, 0, False, False, "side") is None  # side work first: nothing done
    assert [x.payload for x in q.get_many(2)] == ["a", "b"]
    assert [r[1] for r in fast.take(10, 0, False, False, "side")] == [b'"c"']


# -- the side table: leases and acks in C against the pure path ---------------------------


HEX_ID = set("0123456789abcdefABCDEF.")  # the characters of the lease ids C parses itself


class SideTwins:
    """Two queues created alike, one on the pure path and one on C's lease and ack calls,
    under one fake clock: after every step their segments hold the same words (but the
    queue's own slot, creation time and latency histograms) and the same side-table bytes."""

    def __init__(self) -> None:
        self.clock = 1_800_000_000_000_000  # µs, ahead of the real clock: C never reads it
        self._saved = shm_queue._time_ns
        shm_queue._time_ns = lambda: self.clock * 1000
        self.ns = unique_namespace()
        self.broker = zoldyq.create(self.ns, max_queues=4, max_messages=12, max_bytes=512,
                                    max_message_bytes=64)
        self.sqs = []
        for name in ("a", "b"):
            self.sqs.append(self.broker.create_queue(name)._resolve(create=False))
        self.pure, self.c = self.sqs
        self.fast = self.c.fast
        self.pure.fast = None

    def close(self) -> None:
        shm_queue._time_ns = self._saved
        self.c.fast = self.fast
        self.broker.close()
        zoldyq.destroy(self.ns)

    def gen_of(self, sq: Any) -> str:
        return f"{sq.gen:x}."

    def as_c(self, lease_id: str) -> str:
        """The pure queue's lease id as the C queue's (same slot and token, its gen)."""
        gen = self.gen_of(self.pure)
        if not lease_id.startswith(gen):
            return lease_id
        return self.gen_of(self.c) + lease_id[len(gen):]

    def put(self, records: list[tuple[int, bytes]]) -> None:
        self.c.fast = None  # C stamps puts with the real clock: puts take the pure path
        try:
            for sq in self.sqs:
                with contextlib.suppress(QueueFull):
                    sq.put(records, 0)
        finally:
            self.c.fast = self.fast

    def side_work(self) -> bool:
        w = self.c.words
        return bool(w[layout.SW_READY]) or 0 < w[layout.SW_DUE] <= self.clock

    def segment(self, sq: Any) -> bytes:
        words = list(sq.words)
        hist = layout.HIST_BUCKETS + 1
        for i in (layout.W_CREATED_AT, layout.W_SLOT_GEN, *range(layout.W_ENQ_HIST,
                  layout.W_ENQ_HIST + hist), *range(layout.W_DEQ_HIST, layout.W_DEQ_HIST + hist)):
            words[i] = 0
        return bytes(memoryview(sq._mm)[HEADER_BYTES:]) + repr(words).encode()


class LeasesBothPaths(RuleBasedStateMachine):
    """Random leases, acks (some of leases not held, or not lease ids at all), nacks and
    the passing of time: C's lease and ack commit the very words the pure path does, or
    step aside (returning None, nothing done) exactly when the pure path has work first."""

    def __init__(self) -> None:
        super().__init__()
        self.t = SideTwins()
        self.ids: list[str] = []  # the pure queue's lease ids, held or not

    def teardown(self) -> None:
        self.t.close()

    @rule(records=st.lists(st.tuples(kinds, payloads), min_size=1, max_size=4))
    def put(self, records: list[tuple[int, bytes]]) -> None:
        self.t.put(records)

    @rule(n=st.integers(1, 5), seconds=st.integers(1, 4))
    def lease(self, n: int, seconds: int) -> None:
        t = self.t
        try:
            want = t.pure._take(n, 0, False, False, "t", seconds * 1_000_000)
        except QueueFull:
            want = None
        try:
            got = t.fast.lease(n, 0, False, False, "t", None, seconds * 1_000_000,
                               t.clock * 1000, None)
        except QueueFull:
            assert want is None, "C refused a lease the pure path made"
            return
        if got is None:
            assert t.side_work(), "C stepped aside with nothing for the pure path to do"
            got = t.c._take(n, 0, False, False, "t", seconds * 1_000_000)
        else:
            assert not t.side_work()
        assert want is not None, "the pure path refused a lease C made"
        assert [(*r[:4], t.as_c(r[4]), *r[5:]) for r in want] == [tuple(r) for r in got]
        self.ids += [r[4] for r in want]

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        pool = [*self.ids, "nope", "1.2", "0.0.0", "x.y.z", "ff.ffffffffffffffffff.1", ""]
        self.do_ack(data.draw(st.lists(st.sampled_from(pool), max_size=6)))

    @rule(data=st.data())
    def ack_one(self, data: st.DataObject) -> None:
        """A message's own ack: one id, True/False/None for ack's []/[id]/None."""
        t = self.t
        pool = [*self.ids, "nope", "1.2", "x.y.z", "ff.ffffffffffffffffff.1", ""]
        lease_id = data.draw(st.sampled_from(pool))
        want = t.pure.ack([lease_id])
        acked = t.fast.ack_one(t.as_c(lease_id), t.clock * 1000)
        if acked is None:
            assert t.side_work() or t.c.words[layout.SW_DEAD] or not set(lease_id) <= HEX_ID
            got = t.c.ack([t.as_c(lease_id)])
        else:
            got = [] if acked else [t.as_c(lease_id)]
        assert got == [t.as_c(i) for i in want]

    def do_ack(self, ids: list[str]) -> None:
        t = self.t
        want = t.pure.ack(ids)
        got = t.fast.ack([t.as_c(i) for i in ids], t.clock * 1000)
        if got is None:
            assert t.side_work() or any(not set(i) <= HEX_ID for i in ids)
            got = t.c.ack([t.as_c(i) for i in ids])
        assert got == [t.as_c(i) for i in want]

    @rule(data=st.data())
    def nack(self, data: st.DataObject) -> None:
        if self.ids:
            lease_id = data.draw(st.sampled_from(self.ids))
            assert self.t.pure.nack(lease_id) == self.t.c.nack(self.t.as_c(lease_id))

    @rule(ms=st.integers(1, 3000))
    def wait(self, ms: int) -> None:
        self.t.clock += ms * 1000

    @invariant()
    def same_words(self) -> None:
        assert self.t.segment(self.t.pure) == self.t.segment(self.t.c)


LeasesBothPaths.TestCase.settings = settings(max_examples=100, stateful_step_count=80,
                                             deadline=None)
test_leases_both_paths = needs_c(LeasesBothPaths.TestCase)


@needs_c
def test_c_relocates_a_held_lease_like_python() -> None:
    """A lease held while later ones are acked sits at the data ring's head when its tail
    comes round: C moves it to the tail with the same stores as the pure path."""
    m = LeasesBothPaths()
    try:
        m.put([(KIND_BYTES, b"held" * 15)])
        m.lease(1, 4)
        for _ in range(12):
            m.put([(KIND_BYTES, bytes(60))] * 3)
            m.lease(3, 4)
            m.same_words()
            m.do_ack(m.ids[-3:])
            m.same_words()
        assert m.t.pure.side.in_state(LEASED) == [0]
        assert m.t.pure.side.word(0, S_POS) > 0  # moved from the first record's place
        m.do_ack(m.ids[:1])
        m.same_words()
        assert m.t.c.side.count() == 0
    finally:
        m.teardown()


@needs_c
@pytest.mark.parametrize("next_path", ["c", "pure"])
def test_a_c_holder_killed_inside_is_repaired_by_either_path(
    broker: zoldyq.Broker, next_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process killed while its C path holds the put mutex (in the reserve callback: after
    the lock, before the commit) leaves it to the kernel: the next holder, on either path,
    gets EOWNERDEAD, repairs once, and the queue holds exactly what was committed."""
    q = broker.queue("q")
    q.put("a")
    sq = q._sq  # type: ignore[union-attr]
    pid = os.fork()
    if pid == 0:  # pragma: no cover - killed inside
        try:
            die = fast.Fast(sq._mm, "q", sq.put_lock, sq.get_lock, sq._objects["bell"],
                            lambda high: os.kill(os.getpid(), signal.SIGKILL))
            sq.words[layout.W_RESERVED] = 0  # the next put grows the ring: the callback
            die.put_one(KIND_BYTES, b"never committed", 0)
        finally:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    if next_path == "pure":
        monkeypatch.setattr(sq, "fast", None)
    t0 = time.monotonic()
    q.put("b")
    assert time.monotonic() - t0 < 1.0
    assert sq.put_lock.repairs == 1
    assert [m.payload for m in q.get_many(10)] == ["a", "b"]
    assert q.stats()["enqueued_total"] == 2
