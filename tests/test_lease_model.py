"""Hypothesis state machine: the engine against a model of ready/leased/delayed/dead sets.

Random put (plain or delayed), get (plain or leased), ack, nack (with or without
delay), extend, redrive and the passing of time on a fake clock: after every
step the queue holds exactly what the model says, in the model's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import zoldyq
from tests.helpers.namespaces import unique_namespace
from zoldyq.shm import broker as shm_broker
from zoldyq.shm import queue as shm_queue

MAX_DELIVERIES = 3


@dataclass
class Msg:
    ident: int
    key: int  # enqueued_at, or deliver_at for a delayed put: the serving order
    deliveries: int = 0
    state: str = "ring"  # ring, ready (given back), leased, delayed, dead
    deadline: int = 0
    lease_id: str = ""


class Clock:
    def __init__(self) -> None:
        self.us = 1_800_000_000_000_000

    def __call__(self) -> int:
        return self.us * 1000


class LeaseModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self._saved = (shm_queue._time_ns, shm_broker._time_ns)
        shm_queue._time_ns = shm_broker._time_ns = self.clock
        self.ns = unique_namespace()
        self.broker = zoldyq.create(self.ns, max_queues=4, max_bytes=1 << 20)
        self.q = self.broker.create_queue("q", max_deliveries=MAX_DELIVERIES)
        self.msgs: dict[int, Msg] = {}
        self.leases: list[str] = []  # every lease id ever handed out
        self.handed: dict[str, zoldyq.Message] = {}  # the message each lease came with
        self.n = 0

    def teardown(self) -> None:
        shm_queue._time_ns, shm_broker._time_ns = self._saved
        self.broker.close()
        zoldyq.destroy(self.ns)

    # -- the model ------------------------------------------------------------------

    def now(self) -> int:
        return self.clock.us

    def settle(self) -> None:
        """What touching the queue does: expired leases back (or dead), due delays ready."""
        for m in self.msgs.values():
            if m.state == "leased" and m.deadline <= self.now():
                m.state = "dead" if m.deliveries >= MAX_DELIVERIES else "ready"
            elif m.state == "delayed" and m.deadline <= self.now():
                m.state = "ready"

    def order(self) -> list[Msg]:
        returned = sorted((m for m in self.msgs.values() if m.state == "ready"),
                          key=lambda m: (m.key, m.ident))
        return returned + sorted((m for m in self.msgs.values() if m.state == "ring"),
                                 key=lambda m: m.ident)

    def in_state(self, state: str) -> list[Msg]:
        return [m for m in self.msgs.values() if m.state == state]

    # -- rules --------------------------------------------------------------------

    @rule(delay_ms=st.one_of(st.none(), st.integers(1, 50)))
    def put(self, delay_ms: int | None) -> None:
        self.clock.us += 10
        fast = self.q._live(create=True).fast  # type: ignore[attr-defined]
        if fast is not None:  # the compiled put dates a message in C: on the fake clock too
            fast.clock_us = self.clock.us  # (it read the wall clock: a delayed message due
            # on the fake clock was ordered against given-back ones dated a month earlier)
        ident = self.n
        self.n += 1
        if delay_ms is None:
            self.q.put(ident)
            self.msgs[ident] = Msg(ident, self.now())
        else:
            at = self.now() + delay_ms * 1000 + 5
            assert self.q.put(ident, deliver_at=at).deliver_at == at
            self.msgs[ident] = Msg(ident, at, state="delayed", deadline=at)

    @rule(n=st.integers(1, 3), lease_ms=st.one_of(st.none(), st.integers(1, 40)))
    def get(self, n: int, lease_ms: int | None) -> None:
        self.settle()
        want = self.order()[:n]
        got = self.q.get_many(n, lease=None if lease_ms is None else lease_ms / 1000)
        assert [m.payload for m in got] == [m.ident for m in want]
        for real, m in zip(got, want, strict=True):
            m.deliveries += 1
            assert real.delivery_count == m.deliveries
            if lease_ms is None:
                del self.msgs[m.ident]
                assert real.lease_id is None
            else:
                m.state, m.deadline = "leased", self.now() + lease_ms * 1000
                assert real.lease_expires_at == m.deadline
                assert real.lease_id is not None
                m.lease_id = real.lease_id
                self.leases.append(real.lease_id)
                self.handed[real.lease_id] = real

    def held(self, lease_id: str) -> Msg | None:
        self.settle()
        for m in self.in_state("leased"):
            if m.lease_id == lease_id:
                return m
        return None

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(0, 1000))
    def ack(self, pick: int) -> None:
        lease_id = self.leases[pick % len(self.leases)]
        m = self.held(lease_id)
        not_held = self.q.ack_many([lease_id])
        assert not_held == ([] if m else [lease_id])
        if m:
            del self.msgs[m.ident]

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(0, 1000))
    def ack_message(self, pick: int) -> None:
        """The message's own ack (one C call on the compiled path): LeaseExpired if not held."""
        lease_id = self.leases[pick % len(self.leases)]
        m = self.held(lease_id)
        if m:
            self.handed[lease_id].ack()
            del self.msgs[m.ident]
        else:
            with pytest.raises(zoldyq.LeaseExpired):
                self.handed[lease_id].ack()

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(0, 1000), delay_ms=st.sampled_from([0, 0, 5, 30]))
    def nack(self, pick: int, delay_ms: int) -> None:
        lease_id = self.leases[pick % len(self.leases)]
        m = self.held(lease_id)
        try:
            dlq = self.q.nack(lease_id, delay_ms / 1000)
        except zoldyq.LeaseExpired:
            assert m is None
            return
        assert m is not None
        if m.deliveries >= MAX_DELIVERIES:
            assert dlq == "q.dlq"
            m.state = "dead"
        else:
            assert dlq is None
            m.state = "delayed" if delay_ms else "ready"
            m.deadline = self.now() + delay_ms * 1000

    @precondition(lambda self: self.leases)
    @rule(pick=st.integers(0, 1000), lease_ms=st.integers(1, 40))
    def extend(self, pick: int, lease_ms: int) -> None:
        lease_id = self.leases[pick % len(self.leases)]
        m = self.held(lease_id)
        try:
            deadline = self.q.extend(lease_id, lease_ms / 1000)
        except zoldyq.LeaseExpired:
            assert m is None
            return
        assert m is not None
        m.deadline = self.now() + lease_ms * 1000
        assert deadline == m.deadline

    @rule(ms=st.integers(1, 40))
    def tick(self, ms: int) -> None:
        self.clock.us += ms * 1000

    @precondition(lambda self: "q.dlq" in self.broker.queues())
    @rule()
    def redrive(self) -> None:
        self.settle()
        dead = self.in_state("dead")
        self.q.peek()  # the engine, too, moves what is due to the DLQ first
        assert self.broker.queue("q.dlq").redrive() == len(dead)
        for m in dead:
            m.state, m.deliveries = "ready", 0

    # -- what must always hold ----------------------------------------------------

    @invariant()
    def same_as_the_model(self) -> None:
        self.settle()
        assert [m.payload for m in self.q.peek()] == [m.ident for m in self.order()]
        stats = self.q.stats()
        assert stats["inflight"] == len(self.in_state("leased"))
        assert stats["delayed"] == len(self.in_state("delayed"))
        if "q.dlq" in self.broker.queues():
            dead = sorted(self.in_state("dead"), key=lambda m: (m.key, m.ident))
            assert [m.payload for m in self.broker.queue("q.dlq").peek()] == \
                [m.ident for m in dead]
        else:
            assert not self.in_state("dead")


LeaseModel.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_engine_matches_the_delivery_model = LeaseModel.TestCase
test_engine_matches_the_delivery_model.__doc__ = (
    "Every step of random put/get/lease/ack/nack/extend/expiry/redrive leaves the queue "
    "exactly as the model of ready/leased/delayed/dead sets says, in order.")
