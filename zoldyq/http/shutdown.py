"""Graceful stop of a worker process: wake every long-poll at once.

The worker's SIGTERM handling calls ``begin()`` from its main loop (never
from inside a signal handler): it starts one thread that interrupts every
broker of this process, so each waiting dequeue returns (204) at once while
gunicorn stops accepting and finishes the requests in flight.
"""

from __future__ import annotations

import threading

from zoldyq import api

_brokers: list[api.Broker] = []
_started = False


def register(broker: api.Broker) -> None:
    _brokers.append(broker)


def begin() -> None:
    global _started
    if _started:
        return
    _started = True
    threading.Thread(target=_interrupt_all, name="zoldyq-shutdown", daemon=True).start()


def _interrupt_all() -> None:
    for broker in list(_brokers):
        broker.interrupt()
