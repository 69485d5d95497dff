"""JSON payloads are stored as the bytes sent, or refused: never rewritten (issue 10, item 3)."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

import zoldyq
from tests.helpers.json_text import SEPARATORS, VALUES
from zoldyq.api import KIND_BYTES, KIND_JSON, json_field, json_items
from zoldyq.shm import speedups
from zoldyq.shm.speedups import json_records

BIG = b"123456789012345678901234567890"


@pytest.mark.parametrize("data", [
    b"not json", b"", b"1},{\"payload\":2", b"[1,", b"{\"a\":1} {\"b\":2}", b"\xff", b"NaN",
])
def test_put_records_refuses_what_is_not_one_json_document(broker: zoldyq.Broker,
                                                           data: bytes) -> None:
    """Invalid JSON never reaches a consumer, nor one record that would splice into two."""
    q = broker.queue("j")
    q.put(0)
    q.get()
    with pytest.raises(zoldyq.InvalidPayload, match=r"^payload is not valid JSON: "):
        q.put_records([(KIND_JSON, b"1"), (KIND_JSON, data)])
    assert len(q) == 0  # all or none


def test_put_records_keeps_the_bytes_exactly(broker: zoldyq.Broker) -> None:
    """What put_records stores is what get returns, byte for byte; raw records are not checked."""
    q = broker.queue("j")
    q.put_records([(KIND_JSON, BIG), (KIND_JSON, b' {"a": 1.10} '), (KIND_BYTES, b"\xff")])
    got = q.get_many(3)
    assert [m.data for m in got] == [BIG, b' {"a": 1.10} ', b"\xff"]


def test_local_put_refuses_what_it_cannot_encode_exactly(broker: zoldyq.Broker) -> None:
    """The local API encodes with orjson: an integer past 64 bits is refused, not rounded."""
    with pytest.raises(zoldyq.InvalidPayload, match="Integer exceeds 64-bit range"):
        broker.queue("j").put({"n": 2**64})
    assert not broker.exists("j")


def test_json_field_finds_the_exact_member_bytes() -> None:
    """The member's own bytes: whitespace inside kept, the last of duplicate keys (as parsed)."""
    assert json_field(b'{"payload": ' + BIG + b"}", "payload")[1] == BIG
    assert json_field(b'{"payload":1,"payload": [2.50] }', "payload")[1] == b"[2.50]"
    assert json_field(b'{"a":"}","payload":{"b": "x\\"y"},"c":3}', "payload")[1] == \
        b'{"b": "x\\"y"}'
    assert json_field(b'{"pay\\u006coad": 1e2}', "payload")[1] == b"1e2"
    assert json_field(b"[1]", "payload")[1] is None
    assert json_items(b' [1, 2.50 ,"a,]", {"c":[3]} ] ') == [b"1", b"2.50", b'"a,]"',
                                                              b'{"c":[3]}']
    assert json_items(b"[ ]") == []


def _spelled(key: str, escaped: list[bool], upper: bool) -> bytes:
    """``key`` as a JSON string, the letters picked by ``escaped`` written as \\u00XX."""
    return b'"%s"' % "".join(f"\\u{ord(c):04{'X' if upper else 'x'}}" if e else c
                             for c, e in zip(key, escaped, strict=True)).encode()


@given(key=st.sampled_from(["payload", "payloads"]), data=st.data(), upper=st.booleans(),
       first=VALUES, last=VALUES)
def test_json_field_takes_the_last_of_duplicate_keys_however_spelled(
    key: str, data: st.DataObject, upper: bool, first: object, last: object
) -> None:
    """A key written twice, the second time with escaped letters ("p\\u0061yload"): the
    member found is the one orjson keeps, never the text between the first ':' and the
    last '}' (which is not one JSON document)."""
    escaped = data.draw(st.lists(st.booleans(), min_size=len(key), max_size=len(key)))
    text = json.dumps(last).encode()
    body = b'{"%s":%s,%s:%s}' % (key.encode(), json.dumps(first).encode(),
                                  _spelled(key, escaped, upper), text)
    doc, raw = json_field(body, key)
    assert raw == text
    assert orjson.loads(raw) == doc[key]


@given(items=st.lists(st.tuples(VALUES, SEPARATORS), max_size=8),
       between=SEPARATORS,
       pad=st.sampled_from(["", " ", "\n ", "\t\r\n"]), ascii=st.booleans())
def test_json_items_gives_each_element_exactly_as_written(
    items: list[tuple[object, tuple[str, str]]], between: tuple[str, str], pad: str,
    ascii: bool,
) -> None:
    """Whatever the separators, inside elements and between them (strings holding them
    included, escaped or raw UTF-8), every path gives back each element's own text."""
    texts = [json.dumps(v, separators=s, ensure_ascii=ascii).encode() for v, s in items]
    array = (pad + "[" + pad).encode() + between[0].encode().join(texts) + (pad + "]").encode()
    parsed = orjson.loads(array)
    assert json_items(array, parsed) == texts
    assert json_items(array) == texts
    assert json_records(array, parsed, KIND_JSON) == [(KIND_JSON, t) for t in texts]
    if speedups.fast is not None:  # the C scan itself, whichever path json_records took
        out: list[bytes] = []
        speedups.fast.json_items(array, out, None)
        assert out == texts


@pytest.mark.skipif(speedups.fast is None, reason="the C module is not built")
@pytest.mark.parametrize("data", [b"", b"  ", b"{}", b"1", b"[", b"[1", b"[1,", b'["a', b'["a\\"',
                                  b"[1,]", b"[,1]", b"[1,,2]", b'["\\"', b"[1] 2", b"[1],[2]",
                                  b"[] x"])
def test_the_c_scan_refuses_what_is_not_a_whole_array(data: bytes) -> None:
    """Given what orjson would refuse, the C scan raises; it never reads past the end."""
    with pytest.raises(ValueError, match=r"^json_items: not a whole JSON array$"):
        speedups.fast.json_items(data, [], None)
