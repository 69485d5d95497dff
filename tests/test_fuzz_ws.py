"""Hypothesis against the WebSocket frame handling: the pure parser and the real sidecar.

- ``frames.parse_enqueue`` on any text or bytes either gives a record whose
  JSON is the frame's payload, or raises ``BadFrame`` (answered, the stream
  goes on): nothing else escapes;
- the sidecar, sent any sequence of text/binary frames on an enqueue stream,
  answers each one in order with an ack or a short error frame;
- the sidecar, sent raw garbage after the handshake (random bytes, truncated
  frames, lying or huge lengths, unmasked frames, bad opcodes), closes that
  connection and goes on serving everyone else, with no stack trace.

The record decoder is fuzzed in tests/test_security.py.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.sync.client import connect

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace
from zoldyq.shm.layout import KIND_BYTES, KIND_JSON
from zoldyq.ws import frames

MAX_MESSAGE = 4096
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=20,
)


def _envelopes() -> st.SearchStrategy[str]:
    """Valid frames, and their truncations and near misses."""
    valid = st.builds(lambda v: orjson.dumps({"payload": v}).decode(), json_values)
    return st.one_of(
        valid,
        st.tuples(valid, st.integers(0, 200)).map(lambda t: t[0][: t[1]]),
        st.builds(lambda v: orjson.dumps(v).decode(), json_values),
        st.integers(0, 400).map(lambda d: '{"payload":' + "[" * d + "]" * d + "}"),
        st.text(max_size=200),
    )


NOW_US = 1_800_000_000_000_000
_timing = st.one_of(st.none(), st.integers(-5, 2**63), st.floats(-1, 4e7), st.text(max_size=3),
                    st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["delay", "deliver_at"]), _timing))
def test_a_frames_delivery_time_is_the_later_of_both_and_checks_both(obj: dict[str, object]
                                                                     ) -> None:
    """As over HTTP: every timing field sent is checked, and the later one wins."""
    delay, at = obj.get("delay", 0.0), obj.get("deliver_at", 0)
    numbers = all(type(v) in (int, float) for v in obj.values())
    if not (numbers and isinstance(at, int) and 0 <= at <= frames.MAX_DELIVER_AT
            and isinstance(delay, int | float) and 0 <= delay <= frames.MAX_SECONDS):
        with pytest.raises(zoldyq.errors.BadFrame):
            frames.deliver_at(obj, NOW_US)
        return
    due = max(NOW_US + int(delay * 1e6) if "delay" in obj else 0, at)
    assert frames.deliver_at(obj, NOW_US) == (due if due > NOW_US else None)


@settings(max_examples=500, deadline=None)
@given(st.one_of(_envelopes(), st.binary(max_size=300)))
def test_parse_enqueue_never_raises_anything_else(frame: str | bytes) -> None:
    try:
        kind, data = frames.parse_enqueue(frame)
    except frames.BadFrame as ex:
        reason = str(ex)
    else:
        reason = ""
    assert len(reason) < 200
    if reason:
        return
    if isinstance(frame, bytes):
        assert (kind, data) == (KIND_BYTES, frame)
    else:
        assert kind == KIND_JSON
        assert orjson.loads(data) == orjson.loads(frame)["payload"]


# -- the real sidecar ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def sidecar() -> Iterator[servers.Server]:
    ns = unique_namespace()
    try:
        with servers.serve(ns, workers=1, max_message_bytes=MAX_MESSAGE) as srv:
            srv.wait_ready(servers.tcp_ready(srv.ws_port))
            yield srv
            assert "Traceback" not in srv.log(), srv.log()[-5000:]
    finally:
        zoldyq.destroy(ns)


def _ws(srv: servers.Server, path: str = "/queues/fz/enqueue") -> str:
    return f"ws://127.0.0.1:{srv.ws_port}{path}"


def _still_serves(srv: servers.Server) -> None:
    with connect(_ws(srv, "/queues/ok/enqueue"), open_timeout=10) as c:
        c.send('{"payload": "still here"}')
        assert json.loads(c.recv(timeout=10))["queued"] is True
    assert srv.call("GET", "/queues/ok/dequeue", timeout=10).json()["payload"] == "still here"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_envelopes(), st.binary(max_size=MAX_MESSAGE)), min_size=1,
                max_size=20))
def test_sidecar_answers_every_frame_in_order(sidecar: servers.Server,
                                              batch: list[str | bytes]) -> None:
    with connect(_ws(sidecar), open_timeout=10, max_size=None) as c:
        for frame in batch:
            c.send(frame)
        for frame in batch:
            answer = json.loads(c.recv(timeout=10))
            try:
                frames.parse_enqueue(frame)
            except frames.BadFrame:
                assert answer["error"] == "bad_request", (frame, answer)
                assert len(answer["message"]) < 200
                continue
            assert answer.get("queued") is True or answer["error"] == "message_too_large", \
                (frame, answer)
    sidecar.call("POST", "/queues/fz/clear")


def _handshake(port: int, path: str = "/queues/fz/enqueue") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
              b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
              % (path.encode(), key))
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _frame(opcode: int, payload: bytes, *, fin: bool, rsv: int, masked: bool,
           length: int | None) -> bytes:
    """A client frame, possibly malformed: ``length`` may lie about the payload."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if masked:
        mask = os.urandom(4)
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


raw_frames = st.builds(
    _frame,
    st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x7, 0x8, 0x9, 0xA, 0xB, 0xF]),
    st.binary(max_size=200),
    fin=st.booleans(), rsv=st.integers(0, 7), masked=st.booleans(),
    length=st.none() | st.integers(0, 200) | st.sampled_from([126, 65535, 65536, 2**31, 2**63 - 1,
                                                             2**64 - 1]),
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(raw_frames | st.binary(min_size=1, max_size=64), min_size=1, max_size=5),
       st.booleans())
def test_sidecar_survives_garbage_after_the_handshake(sidecar: servers.Server,
                                                      chunks: list[bytes],
                                                      dequeue: bool) -> None:
    s = _handshake(sidecar.ws_port, "/queues/fz/dequeue" if dequeue else "/queues/fz/enqueue")
    with s:
        with contextlib.suppress(OSError):
            for chunk in chunks:
                s.sendall(chunk)
        s.settimeout(0.2)
        with contextlib.suppress(OSError):
            while s.recv(65536):  # answers, a close frame, or nothing (waiting for more)
                pass
    if chunks[0][:1] == b"\x00" and len(chunks) == 1:
        return  # cheap examples do not each need the bystander check below
    _still_serves(sidecar)


def test_sidecar_refuses_a_huge_declared_length_at_once(sidecar: servers.Server) -> None:
    """A frame claiming 2**63 bytes is refused (1009) on its header, not awaited."""
    with _handshake(sidecar.ws_port) as s:
        s.sendall(_frame(0x1, b"{", fin=True, rsv=0, masked=True, length=2**63 - 1))
        data = b""
        with contextlib.suppress(OSError):
            while chunk := s.recv(4096):
                data += chunk
    assert data[:1] == b"\x88"  # a close frame
    assert struct.unpack("!H", data[2:4])[0] == 1009
    _still_serves(sidecar)
