"""Rate-limited API calls with delayed messages: a partner API takes 5 calls a second, so
each call is queued to become visible at its turn (``delay``), and workers just take
what is due. No worker sleeps, and a burst of jobs never exceeds the rate.

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/rate_limited.py
"""

from __future__ import annotations

import itertools
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
        for i in range(jobs):  # the i-th call is due i/RATE seconds from now
            calls.put({"id": i}, delay=i / RATE)
        times = []
        while len(times) < jobs:
            msg = calls.get(timeout=5)
            if msg is None:
                break
            call_api(msg.payload)
            times.append(time.monotonic())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    fastest = min(gaps, default=1 / RATE)
    print(f"done: {len(times)} calls, fastest gap {fastest:.2f} s (limit {1 / RATE:.2f} s)")
    return 0 if len(times) == jobs and fastest >= 0.8 / RATE else 1


if __name__ == "__main__":
    sys.exit(main())
