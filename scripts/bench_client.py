#!/usr/bin/env python
"""What the client SDK costs over HTTP: ``zoldyq.connect("http://...")`` against raw httpx
doing the same requests, and redis-py against a Redis server, in the same run.

Usage: .venv/bin/python scripts/bench_client.py [--ops 2000] [--rounds 5] [--json out.json]

One ``zoldyq serve`` (2 workers) and one redis-server (persistence off), both on loopback.
Each round runs every case once, in turn, so other load on the host hits them alike;
figures are medians over the rounds and each ratio is the median of the per-round ratios.
Two measures: wall-clock messages per second (server and host load included) and this
process's CPU time per message (what the client library itself costs: the SDK's target
is at most 10 % over raw httpx).

    put        one message a call           SDK q.put        httpx POST /enqueue   LPUSH
    get        one message a call           SDK q.get        httpx GET /dequeue    RPOP
    put_many   100 messages a call          SDK put_many     httpx POST /batch     LPUSH *100
    get_many   100 messages a call          SDK get_many     httpx GET ?max=100    RPOP count
    aget       16 tasks, one message each   SDK aget         httpx.AsyncClient     redis.asyncio

The raw httpx side does what a careful hand-written client must: one pooled client, a
status check, and the JSON answer parsed. Payloads are ~100 bytes of JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import zoldyq  # noqa: E402
from tests.helpers import redis_server as redis_helper  # noqa: E402
from tests.helpers import servers  # noqa: E402
from tests.helpers.namespaces import unique_namespace  # noqa: E402

PAYLOAD = {"id": 12345, "kind": "email", "to": "someone@example.com", "body": "x" * 40}
BATCH = 100
TASKS = 16
JSON_HEADERS = {"Content-Type": "application/json"}


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on loopback, persistence off (the suite's own helper)."""
    with redis_helper.start() as srv:
        yield srv.url


def timed(fn: Callable[[], Any], messages: int) -> tuple[float, float]:
    """(messages per second, client CPU µs per message) of one run of ``fn``.

    The CPU time of this process is what the SDK adds over raw httpx; wall-clock
    throughput also carries the server's time and the host's other load.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return messages / (time.perf_counter() - t0), (time.process_time() - c0) * 1e6 / messages


class Cases:
    """Each case as (sdk, raw httpx, redis-py) callables over the same number of messages."""

    def __init__(self, url: str, redis_url: str | None, ops: int) -> None:
        self.ops = ops
        self.sdk = zoldyq.connect(url)  # as users get it: default retries
        limits = httpx.Limits(max_keepalive_connections=64, keepalive_expiry=0.5)  # as the SDK
        self.raw = httpx.Client(base_url=url, limits=limits)
        self.limits = limits
        self.url = url
        self.redis_url = redis_url
        self.r: Any = None
        if redis_url:
            import redis

            self.r = redis.Redis.from_url(redis_url)
        self.body = orjson.dumps({"payload": PAYLOAD})
        self.batch_body = orjson.dumps({"payloads": [PAYLOAD] * BATCH})
        self.item = orjson.dumps(PAYLOAD)

    # -- filling (not timed) --------------------------------------------------------

    def fill(self, queue: str, n: int) -> None:
        q = self.sdk.queue(queue)
        for _ in range(0, n, 1000):
            q.put_many([PAYLOAD] * 1000)
        if self.r is not None:
            for _ in range(0, n, 1000):
                self.r.lpush(queue, *[self.item] * 1000)

    # -- the three sides --------------------------------------------------------------

    def sdk_put(self) -> None:
        q = self.sdk.queue("sdk-put")
        for _ in range(self.ops):
            q.put(PAYLOAD)

    def raw_put(self) -> None:
        post = self.raw.post
        for _ in range(self.ops):
            r = post("/queues/raw-put/enqueue", content=self.body, headers=JSON_HEADERS)
            r.raise_for_status()
            orjson.loads(r.content)

    def redis_put(self) -> None:
        for _ in range(self.ops):
            self.r.lpush("redis-put", self.item)

    def sdk_get(self) -> None:
        q = self.sdk.queue("get")
        for _ in range(self.ops):
            q.get()

    def raw_get(self) -> None:
        get = self.raw.get
        for _ in range(self.ops):
            r = get("/queues/get/dequeue")
            r.raise_for_status()
            orjson.loads(r.content)

    def redis_get(self) -> None:
        for _ in range(self.ops):
            orjson.loads(self.r.rpop("get"))

    def sdk_put_many(self) -> None:
        q = self.sdk.queue("sdk-batch")
        for _ in range(self.ops // BATCH):
            q.put_many([PAYLOAD] * BATCH)

    def raw_put_many(self) -> None:
        for _ in range(self.ops // BATCH):
            body = orjson.dumps({"payloads": [PAYLOAD] * BATCH})  # encoded per call, as the SDK
            r = self.raw.post("/queues/raw-batch/batch", content=body, headers=JSON_HEADERS)
            r.raise_for_status()
            orjson.loads(r.content)

    def redis_put_many(self) -> None:
        for _ in range(self.ops // BATCH):
            self.r.lpush("redis-batch", *[orjson.dumps(PAYLOAD) for _ in range(BATCH)])

    def sdk_get_many(self) -> None:
        q = self.sdk.queue("get")
        for _ in range(self.ops // BATCH):
            [m.payload for m in q.get_many(BATCH)]

    def raw_get_many(self) -> None:
        for _ in range(self.ops // BATCH):
            r = self.raw.get("/queues/get/dequeue", params={"max": BATCH})
            r.raise_for_status()
            [m["payload"] for m in orjson.loads(r.content)["messages"]]

    def redis_get_many(self) -> None:
        for _ in range(self.ops // BATCH):
            [orjson.loads(x) for x in self.r.rpop("get", BATCH)]

    def sdk_aget(self) -> None:
        q = self.sdk.queue("get")

        async def main() -> None:
            async def task() -> None:
                for _ in range(self.ops // TASKS):
                    await q.aget()

            await asyncio.gather(*(task() for _ in range(TASKS)))

        asyncio.run(main())

    def raw_aget(self) -> None:
        async def main() -> None:
            async with httpx.AsyncClient(base_url=self.url, limits=self.limits) as client:
                async def task() -> None:
                    for _ in range(self.ops // TASKS):
                        r = await client.get("/queues/get/dequeue")
                        r.raise_for_status()
                        orjson.loads(r.content)

                await asyncio.gather(*(task() for _ in range(TASKS)))

        asyncio.run(main())

    def redis_aget(self) -> None:
        import redis.asyncio

        async def main() -> None:
            client = redis.asyncio.Redis.from_url(self.redis_url)

            async def task() -> None:
                for _ in range(self.ops // TASKS):
                    orjson.loads(await client.rpop("get"))

            await asyncio.gather(*(task() for _ in range(TASKS)))
            await client.aclose()

        asyncio.run(main())

    def close(self) -> None:
        self.sdk.close()
        self.raw.close()


CASES = ("put", "get", "put_many", "get_many", "aget")


def attempt(c: Cases, case: str, side: str, ops: int) -> tuple[float, float]:
    """One timed run; a run that fails (a server worker restarted under load resets its
    connections, and a plain dequeue is never retried) is said and run again."""
    for _ in range(3):
        try:
            return timed(getattr(c, f"{side}_{case}"), ops)
        except (zoldyq.ZoldyQError, httpx.HTTPError, TypeError) as ex:
            print(f"  {side} {case}: run failed ({ex}), again", file=sys.stderr)
            if case.startswith(("get", "aget")):
                c.fill("get", ops)
    raise RuntimeError(f"{side} {case} failed 3 times")


def run(url: str, redis_url: str | None, ops: int, rounds: int) -> dict[str, Any]:
    c = Cases(url, redis_url, ops)
    sides = ("sdk", "raw", "redis") if redis_url else ("sdk", "raw")
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        k: {s: [] for s in sides} for k in CASES}
    try:
        c.fill("get", 2 * ops)  # warm up both pools and the server's handles
        c.sdk_get()
        c.raw_get()
        for _ in range(rounds):
            for case in CASES:
                for side in sides:
                    if case.startswith(("get", "aget")):
                        c.fill("get", ops)
                    runs[case][side].append(attempt(c, case, side, ops))
                    if case.startswith(("get", "aget")):
                        c.sdk.queue("get").clear()
                        if c.r is not None:
                            c.r.delete("get")
    finally:
        c.close()
    out: dict[str, Any] = {}
    for case, by_side in runs.items():
        pairs = list(zip(by_side["sdk"], by_side["raw"], strict=True))
        out[case] = {side: statistics.median(r for r, _ in v) for side, v in by_side.items()}
        out[case] |= {f"{side}_cpu_us": statistics.median(c for _, c in v)
                      for side, v in by_side.items()}
        out[case]["sdk_over_raw"] = statistics.median(s[0] / r[0] for s, r in pairs)
        out[case]["sdk_cpu_over_raw"] = statistics.median(s[1] / r[1] for s, r in pairs)
    return out


def table(result: dict[str, Any]) -> str:
    has_redis = "redis" in result["put"]
    head = (f"{'case':10} {'SDK msg/s':>10} {'httpx msg/s':>12} {'ratio':>6} "
            f"{'SDK cpu µs/msg':>15} {'httpx cpu µs/msg':>17} {'ratio':>6}")
    head += f" {'redis-py msg/s':>15}" if has_redis else ""
    lines = [head]
    for case, r in result.items():
        line = (f"{case:10} {r['sdk']:>10,.0f} {r['raw']:>12,.0f} {r['sdk_over_raw']:>6.2f} "
                f"{r['sdk_cpu_us']:>15,.1f} {r['raw_cpu_us']:>17,.1f} "
                f"{r['sdk_cpu_over_raw']:>6.2f}")
        line += f" {r['redis']:>15,.0f}" if has_redis else ""
        lines.append(line)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ops", type=int, default=2000, help="messages per run (default 2000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true", help="skip the redis-py column")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    ns = unique_namespace()
    try:
        with contextlib.ExitStack() as stack:
            srv = stack.enter_context(servers.serve(ns, workers=2, max_queues=20))
            redis_url = None if args.no_redis else stack.enter_context(redis_server())
            result = run(srv.url, redis_url, args.ops, args.rounds)
    finally:
        zoldyq.destroy(ns)
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
