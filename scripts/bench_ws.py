#!/usr/bin/env python
"""WebSocket sidecar throughput, side by side with a bare ``websockets`` server.

Usage: .venv/bin/python scripts/bench_ws.py [--messages 200000] [--rounds 3]

Three workloads, 100-byte payloads, each run against the ZoldyQ sidecar and
against a bare ``websockets`` server in the same run (the ceiling of the
library on this machine), best of ``--rounds``:

    stream x1   one consumer drains N pre-filled messages
                (bare: the server sends the same frames from a Python list)
    stream x4   four consumers share N messages (bare: four handlers pop one deque)
    enqueue     one client pipelines N {"payload": ...} frames and reads N answers
                (bare: a pipelined echo server)

Servers and clients are separate processes; clients are ``websockets``
asyncio clients. Compression is off on both sides.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import multiprocessing as mp
import os
import queue
import socket
import subprocess
import sys
import time
from multiprocessing.synchronize import Barrier
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAYLOAD = '"' + "x" * 98 + '"'  # 100 bytes of JSON
END = '{"payload":"END"}'
END_PREFIX = END[:-1]
QUEUE = "bench"


# -- the bare server ------------------------------------------------------------


def bare_server(port: int, messages: int) -> None:
    """The ceiling: frames from a list, an echo; plain ``ws.send`` or coalesced writes."""
    from websockets.asyncio.server import serve

    from zoldyq.ws.handlers import send_frames

    stamp = int(time.time() * 1e6)
    frame = f'{{"payload":{PAYLOAD},"queue_name":"{QUEUE}","enqueued_at":{stamp}}}'.encode()
    pending: collections.deque[bytes] = collections.deque()
    filled = asyncio.Event()

    async def stream(ws) -> None:  # type: ignore[no-untyped-def]
        await filled.wait()
        while pending:
            await ws.send(pending.popleft(), text=True)
        await ws.send(END)

    async def stream_coalesced(ws) -> None:  # type: ignore[no-untyped-def]
        await filled.wait()
        while pending:
            await send_frames(ws, [pending.popleft() for _ in range(min(200, len(pending)))])
        await ws.send(END)

    async def echo(ws) -> None:  # type: ignore[no-untyped-def]
        async for msg in ws:
            await ws.send(msg)

    async def echo_coalesced(ws) -> None:  # type: ignore[no-untyped-def]
        got: list[bytes] = []
        arrived = asyncio.Event()

        async def read() -> None:
            try:
                async for msg in ws:
                    got.append(msg.encode())
                    arrived.set()
            finally:
                arrived.set()

        reader = asyncio.create_task(read())
        while not reader.done() or got:
            await arrived.wait()
            batch = got[:]
            got.clear()
            arrived.clear()
            if batch:
                await send_frames(ws, batch)

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        path = ws.request.path
        if path == "/fill":
            pending.extend([frame] * messages)
            filled.set()
            await ws.send("ok")
            filled.clear()
            return
        await {"/stream": stream, "/stream-coalesced": stream_coalesced,
               "/echo": echo, "/echo-coalesced": echo_coalesced}[path](ws)
        await ws.wait_closed()

    async def main() -> None:
        async with serve(handler, "127.0.0.1", port, compression=None, max_size=1 << 20):
            await asyncio.Future()

    asyncio.run(main())


# -- clients (one process each) ---------------------------------------------------


def stream_client(url: str, ready: Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Connect, wait for the others, count messages until END; (count, time of the last)."""
    from websockets.asyncio.client import connect

    async def main() -> tuple[int, float]:
        n, last = 0, 0.0
        async with connect(url, compression=None, max_size=1 << 20, close_timeout=1) as ws:
            ready.wait()  # blocks the loop: nothing to do before the start anyway
            async for msg in ws:
                if msg.startswith(END_PREFIX):
                    break
                n += 1
                last = time.monotonic()
        return n, last

    out.put(asyncio.run(main()))


def enqueue_client(url: str, messages: int, ready: Barrier, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Pipeline ``messages`` frames while reading the answers; (confirmed, time of the last)."""
    from websockets.asyncio.client import connect

    frame = f'{{"payload":{PAYLOAD}}}'

    async def main() -> tuple[int, float]:
        async with connect(url, compression=None, max_size=1 << 20, close_timeout=1) as ws:
            ready.wait()

            async def produce() -> None:
                for _ in range(messages):
                    await ws.send(frame)

            sender = asyncio.create_task(produce())
            ok = 0
            for _ in range(messages):
                if not (await ws.recv()).startswith('{"error"'):
                    ok += 1
            await sender
            return ok, time.monotonic()

    out.put(asyncio.run(main()))


def run_clients(target, args: tuple, clients: int, start=None, on_wait=None) -> tuple[int, float]:  # type: ignore[no-untyped-def,type-arg]
    """Run ``clients`` client processes; (messages, seconds from the start to the last one).

    The clock starts once every client is connected, just before ``start()``
    fills the queue (or the bare server's list): no server can stream into
    socket buffers before the clock runs. ``on_wait(alive)`` runs while waiting.
    """
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    ready = ctx.Barrier(clients + 1)
    procs = [ctx.Process(target=target, args=(*args, ready, out)) for _ in range(clients)]
    for p in procs:
        p.start()
    ready.wait(timeout=30)
    t0 = time.monotonic()
    if start is not None:
        start()
    results = []
    while len(results) < clients:
        if on_wait is not None:
            on_wait(clients - len(results))
        try:
            results.append(out.get(timeout=0.02))
        except queue.Empty:
            if not any(p.is_alive() for p in procs) and out.empty():
                raise RuntimeError("a client died") from None
    for p in procs:
        p.join(10)
    return sum(r[0] for r in results), max(r[1] for r in results) - t0


# -- the runs ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    if len(sys.argv) > 1 and sys.argv[1] == "--bare-server":
        bare_server(int(sys.argv[2]), int(sys.argv[3]))
        return 0
    args = ap.parse_args()
    n = args.messages

    import zoldyq
    from tests.helpers.namespaces import unique_namespace
    from zoldyq.shm.layout import KIND_JSON

    ns = "bench" + unique_namespace()
    broker = zoldyq.create(ns, max_messages=n + 1000, max_bytes=max(64 << 20, n * 200))
    zq_port, bare_port = free_port(), free_port()
    env = dict(os.environ, ZOLDYQ_NAMESPACE=ns, ZOLDYQ_WS_PORT=str(zq_port),
               ZOLDYQ_LOG_LEVEL="warning")
    procs = [
        subprocess.Popen([sys.executable, "-m", "workers.ws"], env=env, cwd=ROOT),
        subprocess.Popen([sys.executable, __file__, "--bare-server", str(bare_port), str(n)]),
    ]
    zq = f"ws://127.0.0.1:{zq_port}/queues/{QUEUE}"
    bare = f"ws://127.0.0.1:{bare_port}"
    try:
        wait_port(zq_port, procs[0])
        wait_port(bare_port, procs[1])
        q = broker.create_queue(QUEUE, exist_ok=True)
        record = (KIND_JSON, PAYLOAD.encode())

        def fill_zoldyq() -> None:  # pre-encoded: the producer is not what is measured
            for i in range(0, n, 1000):
                q.put_records([record] * min(1000, n - i))

        def fill_bare() -> None:
            from websockets.sync.client import connect

            with connect(f"{bare}/fill") as ws:
                ws.recv()

        def top_up_ends(alive: int) -> None:
            if len(q) == 0:
                q.put_many(["END"] * alive)

        def stream(url: str, c: int, fill):  # type: ignore[no-untyped-def]
            return lambda: run_clients(stream_client, (url,), c, fill,
                                       top_up_ends if fill is fill_zoldyq else None)

        def enqueue(url: str):  # type: ignore[no-untyped-def]
            return lambda: run_clients(enqueue_client, (url, n), 1)

        workloads = {  # name: (zoldyq, bare, bare coalesced)
            f"stream dequeue, {c} consumer{'s' * (c > 1)}": (
                stream(f"{zq}/dequeue", c, fill_zoldyq),
                stream(f"{bare}/stream", c, fill_bare),
                stream(f"{bare}/stream-coalesced", c, fill_bare),
            ) for c in (1, 4)
        }
        workloads["pipelined enqueue, 1 client"] = (
            enqueue(f"{zq}/enqueue"), enqueue(f"{bare}/echo"), enqueue(f"{bare}/echo-coalesced"),
        )
        best = {name: [0.0, 0.0, 0.0] for name in workloads}
        for _ in range(args.rounds):  # rounds interleave the servers: noise hits all alike
            for name, runs in workloads.items():
                for i, run in enumerate(runs):
                    q.clear()
                    got, secs = run()
                    assert got == n, f"{name}: delivered {got} of {n}"
                    best[name][i] = max(best[name][i], n / secs)
        rows = [(name, *rates) for name, rates in best.items()]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.close()
        zoldyq.destroy(ns)

    print(f"\n{n} messages of 100 bytes, best of {args.rounds}, compression off, "
          f"{os.cpu_count()} CPUs\n")
    print("| workload | ZoldyQ msg/s | bare `ws.send` loop | ZoldyQ / bare "
          "| bare, coalesced writes | ZoldyQ / coalesced |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, zq_rate, bare_rate, coalesced in rows:
        print(f"| {name} | {zq_rate:,.0f} | {bare_rate:,.0f} | {zq_rate / bare_rate:.0%} "
              f"| {coalesced:,.0f} | {zq_rate / coalesced:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
