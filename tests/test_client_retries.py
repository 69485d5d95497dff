"""The HTTP client's retry policy and error mapping, against a scripted server (MockTransport).

Retried: what cannot store or lose a message twice. Never retried: a plain
dequeue whose answer was lost (the server may have taken the message).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson
import pytest

import zoldyq
from zoldyq.client import Broker
from zoldyq.client.wire import READ_MARGIN, Wire

Handler = Callable[[httpx.Request], httpx.Response]


def scripted(*steps: Handler | Exception) -> tuple[Broker, list[httpx.Request]]:
    """A Broker whose server answers the requests with ``steps`` in turn."""
    seen: list[httpx.Request] = []
    todo = list(steps)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = todo.pop(0)
        if isinstance(step, Exception):
            raise step
        return step(request)

    return Broker("http://zq.test", retries=3, transport=httpx.MockTransport(handle)), seen


def answer(status: int, doc: object = None, **headers: str) -> Handler:
    return lambda req: httpx.Response(status, content=orjson.dumps(doc), headers=headers)


FULL = answer(429, {"error": "queue_full", "message": "Queue 'q' is at capacity",
                    "queue_name": "q", "queue_capacity": 5, "queue_size": 5,
                    "queue_max_bytes": 100}, **{"Retry-After": "0.2"})
OK = answer(200, {"queued": True, "queue_name": "q", "queue_size": 1, "enqueued_at": 7})
ONE = answer(200, {"payload": 1, "queue_name": "q", "enqueued_at": 7, "queue_size": 0})


def test_put_retries_429_after_retry_after() -> None:
    """A put refused 429 is sent again after the server's Retry-After, and succeeds."""
    b, seen = scripted(FULL, OK)
    t0 = time.monotonic()
    assert b.queue("q").put(1).queue_size == 1
    assert time.monotonic() - t0 >= 0.2
    assert len(seen) == 2


def test_queue_full_carries_retry_after_when_retries_run_out() -> None:
    """After the last retry, QueueFull is raised with the server's fields and retry_after."""
    b, _ = scripted(FULL, FULL, FULL, FULL)
    with pytest.raises(zoldyq.QueueFull) as info:
        b.queue("q").put(1)
    ex = info.value
    assert (ex.queue_name, ex.capacity, ex.size, ex.retry_after) == ("q", 5, 5, 0.2)
    assert str(ex) == "Queue 'q' is at capacity"


def test_connection_refused_is_retried_then_unavailable() -> None:
    """A connection that could not be made is retried (nothing was sent)."""
    b, seen = scripted(httpx.ConnectError("refused"), OK)
    assert b.queue("q").put(1).enqueued_at == 7
    b, seen = scripted(*[httpx.ConnectError("refused")] * 4)
    with pytest.raises(zoldyq.BackendUnavailable, match="ConnectError: refused"):
        b.queue("q").put(1)
    assert len(seen) == 4


def test_plain_dequeue_is_never_retried_after_sending() -> None:
    """A plain get whose answer was lost raises: the message it may have taken is not
    fetched twice (a retry would take the next one and lose this one silently)."""
    b, seen = scripted(httpx.ReadError("reset"), ONE)
    with pytest.raises(zoldyq.BackendUnavailable):
        b.queue("q").get(timeout=1)
    assert len(seen) == 1


def test_a_connection_closed_without_an_answer_is_retried() -> None:
    """A pooled connection the server closed without a byte of answer (its keep-alive
    timer) is retried, for a put and a plain get; a half-sent answer is not."""
    unanswered = httpx.RemoteProtocolError("Server disconnected without sending a response.")
    b, seen = scripted(unanswered, OK)
    assert b.queue("q").put(1).queue_size == 1
    b, seen = scripted(unanswered, ONE)
    assert b.queue("q").get().payload == 1
    half = httpx.RemoteProtocolError("peer closed connection without sending complete message "
                                     "body (received 10 bytes, expected 60)")
    b, seen = scripted(half, ONE)
    with pytest.raises(zoldyq.BackendUnavailable):
        b.queue("q").get()
    assert len(seen) == 1


def test_leased_dequeue_is_retried_after_a_lost_answer() -> None:
    """With a lease, a lost answer is retried: the first message comes back at expiry."""
    b, seen = scripted(httpx.ReadError("reset"), ONE)
    m = b.queue("q").get(timeout=1, lease=30)
    assert m is not None
    assert m.payload == 1
    assert seen[1].url.params["lease"] == "30"


def test_put_is_not_retried_after_a_lost_answer() -> None:
    """A put whose answer was lost is not sent again (it may be stored already)."""
    b, seen = scripted(httpx.ReadError("reset"), OK)
    with pytest.raises(zoldyq.BackendUnavailable):
        b.queue("q").put(1)
    assert len(seen) == 1


def test_read_timeout_is_past_the_poll() -> None:
    """Each long-poll is read with a timeout of its wait plus a margin."""
    b, seen = scripted(answer(204))
    assert b.queue("q").get(timeout=3) is None
    assert seen[0].extensions["timeout"]["read"] == pytest.approx(3 + READ_MARGIN, abs=0.01)
    assert Wire.timeout(0).read == READ_MARGIN


@pytest.mark.parametrize(("status", "doc", "cls"), [
    (404, {"error": "queue_not_found", "message": "Queue 'q' does not exist"},
     zoldyq.QueueNotFound),
    (413, {"error": "message_too_large", "message": "m", "size": 9, "max_message_bytes": 4},
     zoldyq.MessageTooLarge),
    (400, {"error": "bad_name", "message": "invalid queue name 'x/'"}, zoldyq.InvalidName),
    (409, {"error": "lease_expired", "message": "m", "lease_id": "L"}, zoldyq.LeaseExpired),
    (503, {"error": "namespace_broken", "message": "broken"}, zoldyq.BrokenError),
    (507, {"error": "too_many_queues", "message": "m", "max_queues": 3}, zoldyq.TooManyQueues),
    (401, {"error": "unauthorized", "message": "missing or wrong token"}, zoldyq.RequestError),
    (502, None, zoldyq.RequestError),
])
def test_error_answers_raise_the_engine_classes(status: int, doc: object, cls: type) -> None:
    """Each error code comes back as the class the local engine raises (else RequestError)."""
    b, _ = scripted(answer(status, doc))
    with pytest.raises(cls) as info:
        b.queue("q").clear()
    if isinstance(doc, dict) and doc.get("error") == "bad_name":
        assert str(info.value) == "invalid queue name 'x/'"
    if status == 401:
        assert (info.value.http_status, info.value.code) == (401, "unauthorized")
