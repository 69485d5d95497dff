"""The WebSocket wire format and handshake rules, as pure functions (no sockets)."""

from __future__ import annotations

import orjson
import pytest

from zoldyq import api
from zoldyq.errors import InvalidName, InvalidPayload, MessageTooLarge, QueueFull
from zoldyq.shm.layout import KIND_BYTES, KIND_JSON
from zoldyq.ws import checks, frames


def test_text_frame_stores_the_payload_bytes_as_sent() -> None:
    """A text frame {"payload": v} is stored as v's own bytes; other keys are ignored."""
    assert frames.parse_enqueue('{ "payload" : {"a": [1, 2]}, "x": 1 }') == (
        KIND_JSON, b'{"a": [1, 2]}')
    assert frames.parse_enqueue('{"payload": null}') == (KIND_JSON, b"null")


@pytest.mark.parametrize("number", [
    "123456789012345678901234567890", "18446744073709551616", "-9223372036854775809",
    "1.10", "1e2", "0.1000000000000000055511151231257827", "-0",
])
@pytest.mark.parametrize("envelope", ['{"payload": %s}', '{"x": [1], "payload": [%s] }',
                                      '{"payload": 1, "payload": {"n": %s}}'])
def test_numbers_are_never_rewritten(number: str, envelope: str) -> None:
    """Big integers, trailing zeros, exponents: the stored bytes are the client's (issue 10, 3)."""
    frame = envelope % number
    kind, data = frames.parse_enqueue(frame)
    assert kind == KIND_JSON
    assert number.encode() in data
    assert orjson.loads(data) == orjson.loads(frame)["payload"]


def test_binary_frame_is_stored_raw() -> None:
    """A binary frame is stored byte for byte as a raw message."""
    assert frames.parse_enqueue(b"\x00\xffraw") == (KIND_BYTES, b"\x00\xffraw")


@pytest.mark.parametrize("frame", ["not json", "{", '{"payload": 1,}', ""])
def test_invalid_json_is_a_bad_request(frame: str) -> None:
    """A text frame that is not JSON is rejected with a sentence saying so."""
    with pytest.raises(frames.BadFrame, match=r"^frame is not valid JSON: ") as info:
        frames.parse_enqueue(frame)
    assert info.value.code == "bad_request"


@pytest.mark.parametrize("frame", ['[1]', '"payload"', '{"Payload": 1}', "{}", "3"])
def test_json_without_payload_is_a_bad_request(frame: str) -> None:
    """Valid JSON that is not an object with a payload key is rejected."""
    with pytest.raises(frames.BadFrame,
                       match=r'^a text frame must be a JSON object \{"payload": <value>\}$'):
        frames.parse_enqueue(frame)


def test_ack_has_the_roadmap_shape() -> None:
    """The confirmation is {"queued", "queue_name", "queue_size", "enqueued_at"}."""
    raw = frames.ack(frames.ack_prefix("jobs.v1"), 42, 1701234567890123)
    assert orjson.loads(raw) == {"queued": True, "queue_name": "jobs.v1", "queue_size": 42,
                                 "enqueued_at": 1701234567890123}


def test_message_frame_embeds_the_stored_json_unchanged() -> None:
    """A dequeued JSON message is framed around its stored bytes, never re-encoded."""
    before, middle = frames.message_prefix("q-1")
    raw = frames.message(before, middle, b'{"k":"v\\u00e9"}', 17)
    assert raw == b'{"payload":{"k":"v\\u00e9"},"queue_name":"q-1","enqueued_at":17}'
    assert orjson.loads(raw) == {"payload": {"k": "vé"}, "queue_name": "q-1", "enqueued_at": 17}


def test_error_frames_carry_code_message_and_fields() -> None:
    """Engine errors keep their code and fields; an invalid payload is a bad_request."""
    full = orjson.loads(frames.error(QueueFull("jobs", 3, 3, 1024)))
    assert full == {"error": "queue_full", "message": "Queue 'jobs' is at capacity",
                    "queue_name": "jobs", "queue_capacity": 3, "queue_size": 3,
                    "queue_max_bytes": 1024}
    big = orjson.loads(frames.error(MessageTooLarge(10, 5)))
    assert big["error"] == "message_too_large"
    assert big["message"] == "message of 10 bytes exceeds the limit of 5 bytes"
    assert orjson.loads(frames.error(InvalidPayload("x")))["error"] == "bad_request"


def test_close_reason_fits_a_close_frame() -> None:
    """Close reasons are cut to 123 bytes, never in the middle of a character."""
    assert frames.close_reason("bad_path", "short") == "bad_path: short"
    long = frames.close_reason("bad_name", "é" * 200)
    assert len(long.encode()) <= 123
    assert long.endswith("...")


@pytest.mark.parametrize(("target", "expected"), [
    ("/queues/jobs/enqueue", ("jobs", "enqueue")),
    ("/queues/a.b-c_9/dequeue?token=t", ("a.b-c_9", "dequeue")),
])
def test_stream_paths(target: str, expected: tuple[str, str]) -> None:
    """/queues/<name>/enqueue and /queues/<name>/dequeue, with or without a query."""
    assert checks.parse_path(target) == expected


@pytest.mark.parametrize("target", [
    "/", "/queues", "/queues/jobs", "/queues/jobs/peek", "/queues/jobs/dequeue/",
    "queues/jobs/dequeue", "/x/jobs/dequeue", "/queues//dequeue/x",
])
def test_other_paths_are_refused(target: str) -> None:
    """Any other path is a BadPath whose sentence shows the two valid shapes."""
    with pytest.raises(checks.BadPath, match=r"use /queues/<name>/enqueue or"):
        checks.parse_path(target)


def test_bad_queue_names_are_refused() -> None:
    """A queue name outside [A-Za-z0-9_.-]{1,64} is an InvalidName."""
    with pytest.raises(InvalidName, match=r"^invalid queue name 'j\$bs'"):
        checks.parse_path("/queues/j$bs/dequeue")
    with pytest.raises(InvalidName):
        checks.parse_path("/queues/" + "a" * 65 + "/enqueue")
    with pytest.raises(InvalidName, match=r"^invalid queue name ''"):
        checks.parse_path("/queues//enqueue")


def test_names_are_percent_decoded_like_http_paths() -> None:
    """``%2D`` is ``-`` on WebSocket as on HTTP; ``.``/``..`` (even encoded) are no names."""
    assert checks.parse_path("/queues/a%2Db/dequeue") == ("a-b", "dequeue")
    assert checks.parse_path("/queues/%6Aobs/enqueue") == ("jobs", "enqueue")
    for name in (".", "..", "%2e", "%2e%2e", "%2E.", "a%2Fb", "%ff", "%00"):
        with pytest.raises(InvalidName):
            checks.parse_path(f"/queues/{name}/enqueue")


def test_token_from_header_or_query() -> None:
    """Bearer header (any case of the scheme) or ?token= pass; anything else fails."""
    path = "/queues/a/dequeue"
    assert checks.token_ok(None, None, path)
    assert checks.token_ok("s3cret", "Bearer s3cret", path)
    assert checks.token_ok("s3cret", "bearer s3cret", path)
    assert checks.token_ok("s3cret", None, path + "?token=s3cret")
    assert not checks.token_ok("s3cret", None, path)
    assert not checks.token_ok("s3cret", "Bearer wrong", path + "?token=wrong")
    assert not checks.token_ok("s3cret", "Basic s3cret", path)
    assert not checks.token_ok("s3cret", "Bearer s3cre", path)


@pytest.mark.parametrize(("origin", "host", "ok"), [
    (None, "127.0.0.1:9001", True),  # not a browser
    ("http://127.0.0.1:9000", "127.0.0.1:9001", True),  # a page the HTTP port served
    ("https://127.0.0.1:9001", "127.0.0.1:9001", True),
    ("HTTP://LocalHost:9000", "localhost:9001", True),
    ("http://localhost:9000", "127.0.0.1:9001", False),  # another host name
    ("http://127.0.0.1:8080", "127.0.0.1:9001", False),  # another port
    ("http://127.0.0.1", "127.0.0.1:9001", False),
    ("https://broker.example", "broker.example", True),  # behind a proxy: its public name
    ("https://broker.example:8443", "broker.example:8443", True),
    ("http://broker.example", "broker.example:443", False),
    ("https://evil.example", "127.0.0.1:9001", False),
    ("null", "127.0.0.1:9001", False),  # sandboxed frames, file://
    ("http://127.0.0.1:99999", "127.0.0.1:9001", False),
    ("https://app.example", "127.0.0.1:9001", True),  # listed
    ("https://app.example/", "127.0.0.1:9001", True),
])
def test_origin_policy(origin: str | None, host: str, ok: bool) -> None:
    """No Origin, the server's own (its Host, one of its ports) or a listed one (issue 10, 7)."""
    allowed = api.parse_origins("https://App.example, ", None)
    assert api.origin_allowed(origin, host, {9000, 9001}, allowed) is ok


def test_star_allows_any_origin() -> None:
    """``*`` in ZOLDYQ_CORS_ORIGINS lets every page in, on purpose."""
    assert api.origin_allowed("https://x.example", "h:1", {1}, api.parse_origins("*"))


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_wire_matches_the_library_framing(size: int, binary: bool) -> None:
    """Frames built in one go are byte for byte what websockets' own protocol sends."""
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    protocol = ServerProtocol()
    protocol.state = State.OPEN
    out = [b"a" * size, b"b" * (size // 2 + 1)]
    for data in out:
        (protocol.send_binary if binary else protocol.send_text)(data)
    assert frames.wire(out, binary) == b"".join(protocol.data_to_send())


def test_wire_mixes_text_and_binary_frames() -> None:
    """One flag per frame picks text or binary for each."""
    assert frames.wire([b"t", b"b", b"t"], [False, True, False]) == (
        b"\x81\x01t\x82\x01b\x81\x01t")
    assert frames.wire([], True) == b""
