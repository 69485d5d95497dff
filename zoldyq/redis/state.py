"""A queue's running state: one fixed binary record in one string key.

Every script reads it with one GET and writes it back with one SET, instead
of a dozen hash commands: a Redis command from Lua costs about as much as
the rest of a small script, so the hot scripts (put, get) run four commands
(GET, TIME, RPUSH or LPOP, SET; a plain get skips TIME when nothing is
scheduled). The record is ``len(FIELDS)`` big-endian signed 64-bit integers;
``scripts.py`` hands the Lua prelude the same field order, so the layout is
written down once, here.

    max_messages max_bytes max_message_bytes max_deliveries   the caps (fixed at creation)
    size         ready + delayed + leased messages (what max_messages bounds)
    bytes        what they are charged: payload + 16 each (what max_bytes bounds)
    seq          the last sequence number given out
    due          µs; no delayed message or lease falls due before it (0: none).
                 A lower bound: scripts only look at the sorted sets once it passes
    parked       1 while the outbox may hold messages on their way to other queues
    waiters      blocked gets that asked to be woken
    enqueued_total dequeued_total bytes_in_total bytes_out_total acked_total
                 the counters every put, get or ack moves; the rarer ones and the
                 latency histograms stay in the stats hash
"""

from __future__ import annotations

import struct

FIELDS = (
    "max_messages", "max_bytes", "max_message_bytes", "max_deliveries",
    "size", "bytes", "seq", "due", "parked", "waiters",
    "enqueued_total", "dequeued_total", "bytes_in_total", "bytes_out_total", "acked_total",
)  # fmt: skip
RECORD = struct.Struct(">" + "q" * len(FIELDS))


def parse(raw: bytes) -> dict[str, int]:
    return dict(zip(FIELDS, RECORD.unpack(raw), strict=True))


def lua_prelude() -> str:
    """The Lua constants naming the fields (1-based) and the record's struct format."""
    names = ", ".join(f.upper() for f in FIELDS)
    numbers = ", ".join(str(i + 1) for i in range(len(FIELDS)))
    return (f"local {names} = {numbers}\n"
            f"local NFIELDS, STATE_FMT = {len(FIELDS)}, '>{'i8' * len(FIELDS)}'\n")
