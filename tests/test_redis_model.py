"""The Redis engine against a plain Python model of ready / leased / delayed / dead sets.

A hypothesis state machine drives random puts (some delayed), plain and leased
gets, acks, nacks (some delayed), extends, redrives and clock jumps, on a
fake clock that the scripts use instead of the server's, and checks after
every step that the engine holds exactly what the model holds, in order.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import zoldyq
import zoldyq.redis
from tests.helpers.namespaces import unique_namespace
from tests.helpers.redis_server import RedisServer

MAX_MESSAGES = 12
MAX_DELIVERIES = 3


@dataclass(order=True)
class Rec:
    seq: int
    value: int = field(compare=False)
    count: int = field(compare=False, default=0)


class Model:
    """What the engine should hold, with its rules written the simple way."""

    def __init__(self) -> None:
        self.ready: list[Rec] = []
        self.leased: dict[str, tuple[Rec, int]] = {}  # lease id -> (record, expires)
        self.delayed: list[tuple[int, Rec]] = []  # (due, record)
        self.dead: list[int] = []

    def size(self) -> int:
        return len(self.ready) + len(self.leased) + len(self.delayed)

    def to_head(self, recs: list[Rec]) -> None:
        """Back at the head, merged by first enqueue with the older run already there."""
        if not recs:
            return
        top = max(r.seq for r in recs)
        older = list(itertools.takewhile(lambda r: r.seq <= top, self.ready))
        self.ready = sorted(recs + older) + self.ready[len(older):]

    def give_back(self, rec: Rec, back: list[Rec]) -> bool:
        if rec.count >= MAX_DELIVERIES:
            self.dead.append(rec.value)
            return False
        back.append(rec)
        return True

    def reclaim(self, now: int) -> None:
        back: list[Rec] = []
        for lid, (rec, exp) in sorted(self.leased.items(), key=lambda kv: (kv[1][1], kv[0])):
            if exp <= now:
                del self.leased[lid]
                self.give_back(rec, back)
        ripe = sorted((d for d in self.delayed if d[0] <= now), key=lambda d: (d[0], d[1].seq))
        self.delayed = [d for d in self.delayed if d[0] > now]
        for _, rec in ripe:
            if rec.count > 0:
                back.append(rec)
            else:
                self.ready.append(rec)
        self.to_head(back)


class RedisEngineMachine(RuleBasedStateMachine):
    url = ""

    def __init__(self) -> None:
        super().__init__()
        self.ns = unique_namespace()
        self.now = 1_800_000_000_000_000
        self.broker = zoldyq.redis.connect(self.url, self.ns, max_messages=MAX_MESSAGES)
        self.broker.clock = lambda: self.now
        self.broker.create_queue("q", max_deliveries=MAX_DELIVERIES)
        self.q = self.broker.queue("q")
        self.model = Model()
        self.seq = itertools.count()
        self.values = itertools.count()
        self.leases: list[str] = []

    def teardown(self) -> None:
        self.broker.close()
        zoldyq.redis.destroy(self.url, self.ns)

    @rule(n=st.integers(1, 4), delay=st.sampled_from([0, 0, 0, 500, 2000]))
    def put(self, n: int, delay: int) -> None:
        self.model.reclaim(self.now)
        values = [next(self.values) for _ in range(n)]
        at = self.now + delay if delay else None
        if self.model.size() + n > MAX_MESSAGES:
            try:
                self.q.put_many(values, deliver_at=at)
            except zoldyq.QueueFull:
                return
            raise AssertionError("a put past max_messages was accepted")
        self.q.put_many(values, deliver_at=at)
        recs = [Rec(next(self.seq), v) for v in values]
        if at:
            self.model.delayed += [(at, r) for r in recs]
        else:
            self.model.ready += recs

    @rule(n=st.integers(1, 3), lease=st.sampled_from([None, 1000, 3000]))
    def get(self, n: int, lease: int | None) -> None:
        self.model.reclaim(self.now)
        got = self.q.get_many(n, lease=lease / 1e6 if lease else None)
        want, self.model.ready = self.model.ready[:n], self.model.ready[n:]
        assert [m.payload for m in got] == [r.value for r in want]
        for m, rec in zip(got, want, strict=True):
            rec.count += 1
            assert m.delivery_count == rec.count
            if lease:
                assert m.lease_id is not None
                self.model.leased[m.lease_id] = (rec, self.now + lease)
                self.leases.append(m.lease_id)

    @precondition(lambda self: self.leases)
    @rule(i=st.integers(0, 50))
    def ack(self, i: int) -> None:
        self.model.reclaim(self.now)
        lid = self.leases[i % len(self.leases)]
        if lid in self.model.leased:
            self.q.ack(lid)
            del self.model.leased[lid]
        else:
            try:
                self.q.ack(lid)
            except zoldyq.LeaseExpired:
                return
            raise AssertionError("acked a lease that is not held")

    @precondition(lambda self: self.leases)
    @rule(i=st.integers(0, 50), delay=st.sampled_from([0, 0, 1500]))
    def nack(self, i: int, delay: int) -> None:
        self.model.reclaim(self.now)
        lid = self.leases[i % len(self.leases)]
        if lid not in self.model.leased:
            try:
                self.q.nack(lid)
            except zoldyq.LeaseExpired:
                return
            raise AssertionError("nacked a lease that is not held")
        dlq = self.q.nack(lid, delay / 1e6)
        rec, _ = self.model.leased.pop(lid)
        back: list[Rec] = []
        dead = not self.model.give_back(rec, back)
        assert (dlq == "q.dlq") == dead
        if not dead and delay:
            self.model.delayed.append((self.now + delay, rec))
        else:
            self.model.to_head(back)

    @precondition(lambda self: self.leases)
    @rule(i=st.integers(0, 50), lease=st.sampled_from([500, 4000]))
    def extend(self, i: int, lease: int) -> None:
        self.model.reclaim(self.now)
        lid = self.leases[i % len(self.leases)]
        if lid in self.model.leased:
            assert self.q.extend(lid, lease / 1e6) == self.now + lease
            self.model.leased[lid] = (self.model.leased[lid][0], self.now + lease)
        else:
            try:
                self.q.extend(lid, 1)
            except zoldyq.LeaseExpired:
                return
            raise AssertionError("extended a lease that is not held")

    @rule(dt=st.sampled_from([100, 999, 1000, 1500, 5000]))
    def tick(self, dt: int) -> None:
        self.now += dt

    @precondition(lambda self: self.model.dead)
    @rule()
    def redrive(self) -> None:
        self.model.reclaim(self.now)
        dead, self.model.dead = self.model.dead, []
        assert self.broker.queue("q.dlq").redrive() == len(dead)
        # back at the tail of q, as fresh messages (delivery count reset), in dead-letter order
        got = self.q.peek()[len(self.model.ready):]
        assert sorted(m.payload for m in got) == sorted(dead)
        self.model.ready += [Rec(next(self.seq), m.payload) for m in got]

    @invariant()
    def same_as_model(self) -> None:
        self.model.reclaim(self.now)
        assert [m.payload for m in self.q.peek()] == [r.value for r in self.model.ready]
        s = self.q.stats()
        assert (s["inflight"], s["delayed"]) == (len(self.model.leased), len(self.model.delayed))
        assert s["size"] == s["ready"] + s["inflight"] + s["delayed"]  # the counted size
        if self.broker.exists("q.dlq"):
            dead = [m.payload for m in self.broker.queue("q.dlq").peek()]
        else:
            dead = []
        assert sorted(dead) == sorted(self.model.dead)


def test_engine_matches_the_model(redis_server: RedisServer) -> None:
    """Under random put/lease/ack/nack/extend/expire/redrive, the engine equals the model."""
    RedisEngineMachine.url = redis_server.url
    run = RedisEngineMachine.TestCase
    run.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow])
    run().runTest()
