"""The hot path (``zoldyq.http.hot``) answers exactly as the Falcon app does.

Two namespaces get the same requests; one app answers them on the hot path, the
other through Falcon (a query parameter no route reads sends a request there).
Answers must match byte for byte, headers included, apart from the enqueue
times; the queues end with the same messages.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zoldyq
from tests.helpers.namespaces import unique_namespace
from zoldyq.http import asgi, core
from zoldyq.settings import Settings

Answer = tuple[int, frozenset[tuple[bytes, bytes]], bytes]
_TIMES = re.compile(rb'"enqueued_at":\d+')


async def _ask(app: Any, method: str, path: str, query: bytes, body: bytes,
               headers: list[tuple[bytes, bytes]], cut: bool) -> Answer:
    """One request straight to the ASGI app, as gunicorn's worker would send it;
    ``cut``: the client leaves after half the body."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": query, "root_path": "", "headers": headers,
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 9000)}
    events = [{"type": "http.request", "body": body[:len(body) // 2], "more_body": True},
              {"type": "http.disconnect"}] if cut else [
        {"type": "http.request", "body": body, "more_body": False}]
    never = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if not events:
            await never.wait()
        return events.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start, end = sent
    head = frozenset((k, b"0" if k == b"x-zoldyq-enqueued-at" else v)
                     for k, v in start["headers"])
    return start["status"], head, _TIMES.sub(b'"enqueued_at":0', end.get("body") or b"")


@pytest.fixture
def two_apps() -> Iterator[tuple[list[tuple[Any, zoldyq.Broker]], ThreadPoolExecutor]]:
    """Two apps on namespaces of their own, and the thread their loops run in (a loop
    thread's lock policy, never waiting, must not leak into the test's thread)."""
    made = []
    pool = ThreadPoolExecutor(1)
    try:
        for _ in range(2):
            ns = unique_namespace()
            broker = zoldyq.create(ns, max_queues=16, max_messages=20, max_bytes=4096,
                                   max_message_bytes=512)
            made.append((ns, broker))
        yield [(asgi.create(core.Ctx(Settings.load(env={
            "ZOLDYQ_CONFIG": os.devnull, "ZOLDYQ_NAMESPACE": ns}), broker)), broker)
            for ns, broker in made], pool
    finally:
        pool.shutdown()
        for ns, broker in made:
            broker.close()
            zoldyq.destroy(ns)


def _text(value: Any) -> bytes:
    return json.dumps(value).encode()  # spaced, as many clients write it


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=6,
)
_bodies = st.one_of(
    _json.map(lambda v: b'{"payload": %s}' % _text(v)),
    st.lists(_json, max_size=4).map(lambda vs: b'{"payloads":[%s]}' % b", ".join(
        _text(v) for v in vs)),
    st.binary(max_size=40),
    st.sampled_from([b"", b"{}", b'{"payload":1e400}', b'{"payload":1,"payload":2}',
                     b'{"payloads":{}}', b'{"payload":1.10}', b" [1] "]),
)
_request = st.tuples(
    st.sampled_from(["POST enqueue", "POST batch", "GET dequeue", "PUT enqueue",
                     "POST dequeue"]),
    st.sampled_from(["a", "b", "bad name", "x" * 65, ""]),
    _bodies,
    st.sampled_from([b"application/json", b"application/octet-stream",
                     b"Application/Octet-Stream; x=1", None]),
    st.sampled_from(["exact", "short", "none", "cut"]),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests=st.lists(_request, min_size=1, max_size=12))
def test_the_hot_path_answers_as_falcon_does(
    two_apps: tuple[list[tuple[Any, zoldyq.Broker]], ThreadPoolExecutor], requests: list[Any]
) -> None:
    ((hot, hot_broker), (falcon, falcon_broker)), pool = two_apps
    for op, name, body, ctype, length in requests:
        method, route = op.split()
        path = f"/queues/{name}/{route}"
        headers = [(b"host", b"127.0.0.1:9000")]
        if ctype is not None:
            headers.append((b"content-type", ctype))
        if length != "none":
            headers.append((b"content-length", b"%d" % (len(body) + (length == "short"))))
        sent = body if method != "GET" else b""
        answers = [pool.submit(asyncio.run, _ask(app, method, path, query, sent, headers,
                                                 length == "cut")).result(60)
                   for app, query in ((hot, b""), (falcon, b"via=falcon"))]
        assert answers[0] == answers[1], (op, name, body, ctype, length)
    assert _contents(hot_broker) == _contents(falcon_broker)


def _contents(broker: zoldyq.Broker) -> dict[str, list[tuple[bool, bytes]]]:
    """What each queue holds, in order (peeked: nothing is taken)."""
    return {name: [(m.is_raw, m.data) for m in broker.queue(name).peek(1000)]
            for name in sorted(broker.queues())}


@pytest.mark.parametrize(("body", "stored"), [
    (b'{"payload":[1],"p\\u0061yload":[2]}', [b"[2]"]),
    (b'{"payloads":[1],"p\\u0061yloads":[2, 3]}', [b"2", b"3"]),
    (b'{"payloads":[1],"PAYLOADS":[4],"pay\\u006COADS":5,"p\\u0061yloads":["\\u00e9"]}',
     [b'"\\u00e9"']),
])
def test_a_key_repeated_with_escaped_letters_stores_the_member_orjson_kept(
    two_apps: tuple[list[tuple[Any, zoldyq.Broker]], ThreadPoolExecutor], body: bytes,
    stored: list[bytes],
) -> None:
    """The last of duplicate keys wins, however it is spelled: a 200 storing that member's
    elements, never the text from the first key on (not one JSON document: a batch was a
    500, an enqueue stored it), on the hot path and through Falcon alike."""
    (hot, hot_broker), (falcon, falcon_broker) = two_apps[0]
    pool = two_apps[1]
    route = "batch" if b'"payloads"' in body else "enqueue"
    headers = [(b"host", b"127.0.0.1:9000"), (b"content-type", b"application/json"),
               (b"content-length", b"%d" % len(body))]
    for app, query, broker in ((hot, b"", hot_broker), (falcon, b"via=falcon", falcon_broker)):
        status, _, _ = pool.submit(asyncio.run, _ask(app, "POST", f"/queues/d/{route}", query,
                                                     body, headers, False)).result(60)
        assert status == 200
        assert _contents(broker) == {"d": [(False, data) for data in stored]}
