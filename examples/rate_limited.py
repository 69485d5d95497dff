"""Rate-limited API calls with delayed messages: a partner API takes 5 calls a second, so
each call is queued to become visible at its turn (``deliver_at``; ``delay=`` is the
relative form), and workers just take what is due: no worker sleeps, and a burst of
jobs is spread over time instead of hitting the partner at once.

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/rate_limited.py
"""

from __future__ import annotations

import os
import sys
import time

import zoldyq

URL = os.environ.get("ZOLDYQ_URL", "http://127.0.0.1:9000")
RATE = 5.0  # calls per second the partner allows


def call_api(job: dict[str, object]) -> None:
    print(f"{time.strftime('%H:%M:%S')} called the API for job {job['id']}")


def main(jobs: int = 10) -> int:
    with zoldyq.connect(URL) as broker:
        calls = broker.queue("partner-api")
        start = time.time_ns() // 1000  # µs since the epoch, as deliver_at
        for i in range(jobs):  # the i-th call is due i/RATE seconds after the start
            due = start + int(i / RATE * 1e6)
            calls.put({"id": i, "due": due}, deliver_at=due)
        early = done = 0
        while done < jobs:
            msg = calls.get(timeout=5)
            if msg is None:
                break
            early += time.time_ns() // 1000 < msg.payload["due"]  # never, by construction
            call_api(msg.payload)
            done += 1
    print(f"done: {done} calls in {(time.time_ns() // 1000 - start) / 1e6:.1f} s, "
          f"{early} before their turn")
    return 0 if done == jobs and not early else 1


if __name__ == "__main__":
    sys.exit(main())
