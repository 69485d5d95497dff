"""A ring over a plain bytearray, laid out as in a queue segment: header, ring, block table."""

from __future__ import annotations

from zoldyq.shm.layout import HEADER_BYTES, table_bytes
from zoldyq.shm.ring import Ring


def bare_ring(size: int, max_messages: int, max_message_bytes: int,
              buf: bytearray | None = None) -> tuple[bytearray, Ring]:
    """(buffer, Ring) over ``buf`` or a new zeroed one; the ring's words are formatted only
    for a new buffer (a copy keeps its words, for a second view of the same bytes)."""
    new = buf is None
    if buf is None:
        buf = bytearray(HEADER_BYTES + size + table_bytes(size))
    view = memoryview(buf)
    words = view[:HEADER_BYTES].cast("Q")
    if new:
        Ring.format(words, size, max_messages, max_message_bytes, HEADER_BYTES + size)
    return buf, Ring(words, view[HEADER_BYTES : HEADER_BYTES + size],
                     view[HEADER_BYTES + size :].cast("Q"))
