"""Pure pieces of the HTTP layer: the error mapping, parameter parsing, log formatting."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

import zoldyq
from zoldyq.http import core
from zoldyq.http.errors import RequestError, error_reply
from zoldyq.ops.logs import JsonFormatter, PrettyFormatter


def test_a_bug_is_a_500_without_its_stack_trace(caplog: pytest.LogCaptureFixture) -> None:
    """The trace goes to the log, the client gets a sentence."""
    try:
        raise RuntimeError("secret internals at 0xdeadbeef")
    except RuntimeError as ex:
        status, body, headers = error_reply(ex, "GET", "/x")
    assert status == 500
    assert json.loads(body) == {"error": "internal_error",
                                "message": "internal error (logged by the server)"}
    assert headers == {}
    assert "secret internals" in caplog.text
    assert "Traceback" in caplog.text


def test_engine_errors_keep_their_code_status_and_fields() -> None:
    status, body, _ = error_reply(zoldyq.QueueFull("q", 3, 3, 1024), "POST", "/x")
    assert status == 429
    assert json.loads(body) == {"error": "queue_full", "message": "Queue 'q' is at capacity",
                                "queue_name": "q", "queue_capacity": 3, "queue_size": 3,
                                "queue_max_bytes": 1024}


def test_401_names_the_scheme() -> None:
    status, _, headers = error_reply(RequestError(401, "unauthorized", "no"), "GET", "/")
    assert status == 401
    assert headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(("raw", "expected"), [(None, 0.0), ("0", 0.0), ("2.5", 2.5),
                                               ("30", 30.0)])
def test_timeout_values(raw: str | None, expected: float) -> None:
    assert core.parse_timeout(raw, 30) == expected


@pytest.mark.parametrize("raw", ["-0.1", "30.01", "x", "nan", "inf", "-inf", "", "1e9"])
def test_bad_timeouts(raw: str) -> None:
    with pytest.raises(RequestError, match=r"^timeout must be a number of seconds from 0 to 30,"):
        core.parse_timeout(raw, 30)


@pytest.mark.parametrize("raw", ["0", "1001", "1.5", "x", "-1"])
def test_bad_max(raw: str) -> None:
    with pytest.raises(RequestError, match=r"^max must be an integer from 1 to 1000, got "):
        core.parse_max(raw, 1000)


def _record(exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("zoldyq.http", logging.ERROR, __file__, 1, "bad %s", ("thing",),
                             exc_info)


def test_json_log_lines_are_one_json_object_each() -> None:
    line = JsonFormatter().format(_record(exc=True))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "error"
    assert doc["logger"] == "zoldyq.http"
    assert doc["msg"] == "bad thing"
    assert "ValueError: boom" in doc["exc"]


def test_pretty_log_lines() -> None:
    line = PrettyFormatter().format(_record())
    assert line.endswith(f"ERROR   zoldyq.http[{_record().process}] bad thing")


_CTYPE_PARTS = st.sampled_from(["application/json", "application/octet-stream", "text/plain",
                                "APPLICATION/Octet-Stream", " ", ";", "charset=utf-8", ""])


@given(st.none() | st.lists(_CTYPE_PARTS | st.text(max_size=5), max_size=4).map("".join))
def test_is_raw_is_octet_stream_in_any_case_with_any_parameters(ctype: str | None) -> None:
    """Raw bytes exactly when the media type (before any ';') is application/octet-stream,
    any case, any spaces; the JSON shortcut changes no answer."""
    model = ctype is not None and ctype.partition(";")[0].strip().lower() == core.OCTETS
    assert core.is_raw(ctype) is model
