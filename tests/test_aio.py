"""The asyncio side of the local API: ``Queue.astream`` (``aget`` is in test_broker.py)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
from pathlib import Path

import zoldyq
from tests.helpers.multiproc import spawn


def test_astream_yields_another_process_puts_in_order(
    broker: zoldyq.Broker, tmp_path: Path, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Messages put by another process come out of astream exactly once, in put order,
    while the event loop keeps running other tasks."""
    broker.create_queue("s", max_messages=100)  # smaller than the run: the producer waits
    q = broker.queue("s")
    count = 500

    async def main() -> tuple[list[list[int]], int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick = asyncio.create_task(ticker())
        procs.append(spawn("producer", broker.namespace, "s", 7, count, tmp_path / "ack"))
        got: list[list[int]] = []
        async with asyncio.timeout(60):
            async for msg in q.astream():
                got.append(msg.payload)
                if len(got) == count:
                    break
        tick.cancel()
        return got, ticks

    got, ticks = asyncio.run(main())
    assert got == [[7, seq] for seq in range(count)]
    assert ticks > 0
    assert procs[0].wait(30) == 0
    assert len(q) == 0


def test_astream_ends_on_interrupt(broker: zoldyq.Broker) -> None:
    """An astream waiting on an empty queue ends within a second of broker.interrupt()."""
    q = broker.queue("idle")
    q.put("first")

    async def main() -> list[str]:
        seen = []
        threading.Timer(0.3, broker.interrupt).start()
        async with asyncio.timeout(5):
            async for msg in q.astream():
                seen.append(msg.payload)
        return seen

    assert asyncio.run(main()) == ["first"]
