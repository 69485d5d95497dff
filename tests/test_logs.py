"""Logs stay small: client errors are not logged per request, repeated errors are rate-limited."""

from __future__ import annotations

import logging
import time

from tests.helpers import servers
from zoldyq.ops.logs import RateLimit


def test_a_burst_of_429s_writes_no_line_at_the_default_level(namespace: str) -> None:
    """200 enqueues on a full queue and 100 bad requests: counted by metrics, not logged."""
    with servers.gunicorn(namespace, workers=1) as srv:
        assert srv.call("PUT", "/queues/tiny", json={"max_messages": 1}).status == 201
        assert srv.call("POST", "/queues/tiny/enqueue", json={"payload": 0}).status == 200
        for _ in range(200):
            assert srv.call("POST", "/queues/tiny/enqueue", json={"payload": 1}).status == 429
        for _ in range(50):
            assert srv.call("POST", "/queues/tiny/enqueue", body=b"{").status == 400
            assert srv.call("GET", "/nowhere").status == 404
        metrics = srv.call("GET", "/metrics").body.decode()
        log = srv.log()
    assert 'code="429"' in metrics or 'status="429"' in metrics
    assert "429" not in log
    assert "bad_json" not in log
    assert "/nowhere" not in log


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_repeated_errors_are_rate_limited() -> None:
    """One message template: 10 lines per window, then one line saying how many were dropped."""
    keep = _Keep()
    keep.addFilter(RateLimit(burst=10, window=0.2))
    log = logging.getLogger("zoldyq.test.ratelimit")
    log.addHandler(keep)
    log.propagate = False
    log.setLevel(logging.DEBUG)
    try:
        for i in range(1000):
            log.error("accept failed: %d", i)
            log.info("info is never limited %d", i)
        assert sum(r.levelno == logging.ERROR for r in keep.records) == 10
        time.sleep(0.25)
        log.error("accept failed: %d", 1000)
        log.warning("another message")
    finally:
        log.removeHandler(keep)
        log.propagate = True
    errors = [r.getMessage() for r in keep.records if r.levelno >= logging.WARNING]
    assert errors[-2] == "accept failed: 1000 [990 more like this in 0.2 s not shown]"
    assert errors[-1] == "another message"
    assert sum(r.levelno == logging.INFO for r in keep.records) == 1000
