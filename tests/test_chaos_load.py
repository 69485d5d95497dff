"""A short chaos run under load (``tests/helpers/chaos.py``): kill -9 gunicorn workers, the
sidecar and local clients while HTTP, WebSocket and local producers and consumers
run; nothing acknowledged is lost unless a killed process took it, nothing is
duplicated, corrupted or reordered, and no surviving client stalls for long (1 s in
``scripts/chaos``; 3 s here, so a loaded box does not flake)."""

from __future__ import annotations

import os

import pytest

from tests.helpers.chaos import chaos, render
from tests.helpers.redis_server import RedisServer


def test_chaos_under_load() -> None:
    seed = int(os.environ.get("ZOLDYQ_CHAOS_SEED", "3"))
    # 8 s: a sidecar kill (it must be up 5.5 s first) besides a dozen others
    # stalls and recovery bounded at 3 s here: the 1 s target is scripts/chaos's, on an
    # idle box (a 2-core box at load 10 stalled a survivor 1.1-1.8 s)
    report = chaos(seconds=8, seed=seed, kill_interval=0.25, workers=3, rate=100,
                   time_limit=3.0)
    print(render(report))
    assert report["failures"] == [], render(report)
    assert report["kills"].get("worker", 0) >= 3
    assert report["kills"].get("sidecar", 0) >= 1
    assert report["kills"].get("local-producer", 0) + report["kills"].get("local-consumer", 0) >= 3
    assert report["acknowledged"] > 1000
    assert report["duplicated"] == report["corrupted"] == report["reordered"] == 0


@pytest.mark.slow
def test_chaos_under_load_on_redis(redis_server: RedisServer) -> None:
    """The same chaos with every front end and client on Redis: kill -9 of gunicorn workers,
    the sidecar and local clients loses nothing acknowledged beyond what they held, and
    duplicates, corrupts or reorders nothing."""
    seed = int(os.environ.get("ZOLDYQ_CHAOS_SEED", "3"))
    # a kill every 0.5 s: a Redis client process needs most of a second to import redis-py
    # on a loaded box, and one killed before it starts acknowledges nothing
    report = chaos(seconds=10, seed=seed, kill_interval=0.5, workers=3, rate=100,
                   backend=redis_server.url, time_limit=3.0)
    print(render(report))
    assert report["failures"] == [], render(report)
    assert report["kills"].get("worker", 0) >= 3
    assert report["acknowledged"] > 500
    assert report["duplicated"] == report["corrupted"] == report["reordered"] == 0
