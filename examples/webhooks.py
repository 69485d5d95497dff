"""Webhook delivery with retries and a dead-letter queue.

Each delivery attempt holds a lease; a failure is nacked with an exponential delay, and
after ``max_deliveries`` attempts the server moves the event to ``webhooks.dlq`` (with
its delivery count and original queue), where an operator can look and ``redrive`` it.

    ZOLDYQ_URL=http://127.0.0.1:9000 python examples/webhooks.py
"""

from __future__ import annotations

import os
import sys

import zoldyq

URL = os.environ.get("ZOLDYQ_URL", "http://127.0.0.1:9000")


def post(endpoint: str, event: dict[str, object]) -> None:
    if "down" in endpoint:  # your HTTP POST here; this endpoint always fails
        raise ConnectionError(f"{endpoint} is not answering")


def main() -> int:
    with zoldyq.connect(URL) as broker:
        hooks = broker.create_queue("webhooks", max_deliveries=3,
                                    dead_letter_queue="webhooks.dlq", exist_ok=True)
        for i in range(4):
            endpoint = "https://down.example.com/hook" if i == 3 else "https://ok.example.com/hook"
            hooks.put({"endpoint": endpoint, "event": {"order": i}})
        delivered = dead = 0
        while delivered + dead < 4:
            msg = hooks.get(timeout=5, lease=10)
            if msg is None:
                break
            try:
                post(msg.payload["endpoint"], msg.payload["event"])
            except ConnectionError as ex:
                dlq = msg.nack(delay=0.1 * 2 ** msg.delivery_count)  # back off, then retry
                print(f"attempt {msg.delivery_count} failed: {ex}")
                dead += dlq is not None
            else:
                msg.ack()
                delivered += 1
        parked = broker.queue("webhooks.dlq").peek()
    print(f"done: {delivered} delivered, {len(parked)} in webhooks.dlq")
    return 0 if (delivered, len(parked)) == (3, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
