"""Byte layouts of the shared segments, written down once.

Queue segment (one per queue): a 4096-byte header of little-endian u64 words,
then the byte ring. Words are read and written through a ``memoryview`` cast
to ``"Q"``: an aligned 8-byte item assignment is one store, so a reader never
sees half of it (``struct.pack_into`` may write a field piecewise).

| word  | field             | written by                 | notes                           |
|-------|-------------------|----------------------------|---------------------------------|
| 0     | magic             | creator                    | ``QUEUE_MAGIC``                 |
| 1     | version           | creator                    | ``LAYOUT_VERSION``              |
| 2     | ring_size         | creator                    | bytes in the ring, multiple of 8|
| 3     | max_messages      | creator                    |                                 |
| 4     | max_message_bytes | creator                    | payload bytes                   |
| 5     | created_at_us     | creator                    |                                 |
| 6     | slot<<32 \\| gen   | creator                    | checked on attach               |
| 7     | flags             | deleter, holding both locks| bit 0: closed (queue deleted)   |
| 8     | tail              | put side: the commit point | enq_seq32<<32 \\| tail offset    |
| 9     | enq_total         | put side, after the commit | repaired from ``tail``          |
| 10    | reserved          | put side                   | ring bytes backed by fallocate  |
| 11    | full_total        | put side                   | rejected puts                   |
| 12    | bytes_in_total    | put side                   | payload bytes accepted          |
| 13    | table_at          | creator                    | byte offset of the block table  |
| 16    | head              | get side: the commit point | deq_seq32<<32 \\| head offset    |
| 17    | deq_total         | get side, after the commit | repaired from ``head``          |
| 18    | waiters           | get side                   | consumers parked on the doorbell|
| 19    | timeout_total     | get side                   | gets that timed out empty       |
| 20    | bytes_out_total   | get side                   | payload bytes handed out        |
| 21    | cleared_total     | get side                   | messages dropped by clear()     |
| 24-41 | enqueue histogram | put side                   | 17 bucket counts + sum in ns    |
| 48-65 | dequeue histogram | get side                   | 17 bucket counts + sum in ns    |
| 72-95 | side table        | get side                   | ``SW_*``: see ``side``          |
| 496-502 | put lock        | ``lock.RobustLock``        | a robust process-shared mutex   |
| 503   | put lock dirty    | the put lock's holder      | a change was left unfinished    |
| 504-510 | get lock        | ``lock.RobustLock``        | the same for the get side       |
| 511   | get lock dirty    | the get lock's holder      |                                 |

The side table (slots of ``SLOT_W`` words, then a data ring of
``SW_DSIZE`` bytes) follows the ring in the same segment, then (page-aligned, at
``table_at``) the block table: one u64 per ``BLOCK`` bytes of ring, the base µs the
records whose payload ends in that block are dated against.

Put-side and get-side words sit on different cache lines and are written
under different locks, so a producer and a consumer never contend. The one
exception: holding both locks, an empty ring's tail and then its head go back
to offset 0 (``queue.SharedQueue.trim``, and on the C path a put that finds the
ring empty or a take that drains it, past ``TRIM_KEEP`` and only when the other
lock is free at once), so a stream keeps to a few cached pages.

Ring records (version 5) are 4-byte aligned; a header's first u32 ``word`` holds a 3-bit
tag in its low bits: ``KIND_JSON`` 1 or ``KIND_BYTES`` 2 alone for a compact record, the
kind | ``TAG_MEDIUM`` (4) for a medium one, ``TAG_LONG`` (7) for a long one, ``TAG_WRAP``
(3) for a wrap marker (a lone u32: an aligned tail always has room for it; the record
starts at offset 0). Zeroed memory (tag 0) never parses.

| form    | header u32s                                            | payload | for 100 B |
|---------|--------------------------------------------------------|---------|-----------|
| compact | ``kind \\| len << 3 \\| delta << 15`` (17-bit µs)         | < 4 KiB | 104       |
| medium  | ``kind \\| 4 \\| len << 3 \\| delta >> 32 << 30``, ``delta`` | any     | 108       |
| long    | ``7 \\| len << 3 \\| kind << 30``, then enqueued_at (i64)  | any     | 112       |

(a medium delta has 34 bits, 4.7 hours; ``len`` 27 bits, 12 in a compact header),
then the payload, padded to 4. A record wraps to offset 0 when its long form would not
fit before the end, so where it starts never depends on its form. A compact or medium
record's time is ``table[(payload end - 1) // BLOCK] + delta``: it is dated against the
base of the block its payload's last byte lies in (its header's for an empty payload).
Dating by the block a record *ends* in, not the one it starts in, is what lets the
producer tell from the tail alone whether a committed record of this lap is dated in a
block (the newest one ends at the tail); by the start block it would need a put-side
word naming the block the last record started in, stored before the tail, reset by
rewinds and repaired after a crash (a dead put can leave it naming an uncommitted
record's block).

Why every queued record's time comes back exact, for a producer or consumer killed at
any instruction: a block's base is stored (one aligned 8-byte store, before the record's
bytes and the tail's store) only by the put side, only when no committed record between
head and tail can end in that block, and only for a record ending in it, which is then
dated 0 past it. The producer knows that from the words alone: the ring is empty, or the
newest record (ending at the tail) ends in an earlier block and the head is not ahead of
the new record inside that block (an old lap still there); its own batch counts as
queued as it goes. Otherwise the record is dated against the base as it is (compact if
within 131 ms, else medium, else long), which no one else may change while a queued
record ends in that block: the new one does, once committed. A producer that dies after
a base store leaves a base no queued record refers to (nothing it wrote is committed);
the words it would have moved are the tail and the totals, repaired as before. Consumers
only read bases (after loading the tail: x86 keeps stores in order), never write them,
so a consumer killed anywhere leaves them as they were. Rewinds, trims and clears leave
an empty ring, over which the next put stores a fresh base. No word beyond the tail
says which block was written last, so nothing more needs a repair.

The table is backed (fallocate) together with the ring bytes it describes, before
``reserved`` grows past them, and trimmed with them (``queue.SharedQueue``), so no table
store can fault on a full /dev/shm.

Why this design and not a variable-length one (a varint length and a time delta against
the previous record): the delta chain needs the consumer's last time kept crash-safely
beside the head, every copy out of the ring (leases, peeks, snapshots) must walk the
chain from the head, and the record size depends on the previous record's time. A base
per 8 KiB block keeps each record decodable alone from its offset, with one store per
block and the empty-ring argument of version 4 applied block by block.

Registry segment: a 4096-byte header then ``max_queues`` slots of 256 bytes.

| header word | field                                      |
|-------------|--------------------------------------------|
| 0           | magic ``REGISTRY_MAGIC``                   |
| 1           | version                                    |
| 2           | max_queues                                 |
| 3, 4, 5     | default max_messages, max_bytes, max_message_bytes |
| 6           | created_at_us                              |
| 7           | flags: bit 0 destroyed                     |
| 504-511     | the registry lock (``lock.RobustLock``)    |

| slot word | field                                                        |
|-----------|--------------------------------------------------------------|
| 0         | gen<<32 \\| state (FREE, CREATING, ACTIVE, DELETING): the commit point |
| 1         | name length                                                  |
| 2-9       | name, 64 bytes of ASCII                                      |
| 10, 11, 12| max_messages, max_bytes, max_message_bytes                   |
| 13        | created_at_us                                                |
| 14        | max_deliveries (0: none)                                     |
| 15-23     | dead_letter_queue: length, then 64 bytes of ASCII            |
"""

from __future__ import annotations

from zoldyq.api import HIST_BOUNDS as HIST_BOUNDS  # re-exported for the engine
from zoldyq.api import KIND_BYTES as KIND_BYTES
from zoldyq.api import KIND_JSON as KIND_JSON
from zoldyq.api import MAX_BYTES_LIMIT, MAX_MESSAGE_BYTES_LIMIT
from zoldyq.api import MAX_MESSAGES_LIMIT as MAX_MESSAGES_LIMIT

LAYOUT_VERSION = 5  # 3: robust mutexes in the headers; 4: 8-byte records; 5: 4-byte records
QUEUE_MAGIC = int.from_bytes(b"ZOLDYQ.Q", "little")
REGISTRY_MAGIC = int.from_bytes(b"ZOLDYQ.R", "little")
HEADER_BYTES = 4096

# queue header words
W_MAGIC, W_VERSION, W_RING_SIZE, W_MAX_MESSAGES, W_MAX_MESSAGE_BYTES = 0, 1, 2, 3, 4
W_CREATED_AT, W_SLOT_GEN, W_FLAGS = 5, 6, 7
W_TAIL, W_ENQ_TOTAL, W_RESERVED, W_FULL_TOTAL, W_BYTES_IN, W_TABLE = 8, 9, 10, 11, 12, 13
W_HEAD, W_DEQ_TOTAL, W_WAITERS, W_TIMEOUTS, W_BYTES_OUT, W_CLEARED = 16, 17, 18, 19, 20, 21
W_ENQ_HIST, W_DEQ_HIST = 24, 48
FLAG_CLOSED = 1
# A lock takes one cache line of its header: the mutex, then its dirty word (``lock``).
LOCK_WORDS, LOCK_DIRTY = 8, 7
W_PUT_LOCK, W_GET_LOCK = 496, 504
# side table words (``side``), all written under the get lock
(SW_NSLOTS, SW_DSIZE, SW_HIGH, SW_FREE, SW_TOKEN, SW_DUE, SW_DHEAD, SW_DTAIL, SW_SRES,
 SW_DRES, SW_READY, SW_LEASED, SW_DELAYED, SW_DEAD, SW_BYTES, SW_BATCH, SW_ACKED,
 SW_REDELIVERED, SW_DEAD_TOTAL, SW_REQUEUED) = range(72, 92)
SLOT_W = 16  # words per side slot

# An empty queue gives its ring memory back to /dev/shm but these bytes (queue.trim),
# when a get drains it of a record at least TRIM_AGE_US old or a get times out empty.
TRIM_KEEP = 32 << 10
TRIM_AGE_US = 1_000_000

# Latency histogram bounds (``api.HIST_BOUNDS``, 10 µs to 1 s); the last bucket is +Inf.
HIST_BOUNDS_NS = tuple(round(b * 1e9) for b in HIST_BOUNDS)
HIST_BUCKETS = len(HIST_BOUNDS) + 1  # + Inf

# records (see above)
TAG_BITS, LEN_SHIFT = 3, 3
TAG_MASK = (1 << TAG_BITS) - 1
TAG_WRAP, TAG_MEDIUM, TAG_LONG = 3, 4, 7  # tags 1, 2: KIND_JSON, KIND_BYTES (from the api)
LEN_BITS = 27  # a medium or long record's length
LEN_MASK = (1 << LEN_BITS) - 1
TIME_HI_SHIFT, KIND_SHIFT = 30, 30  # a medium delta's top 2 bits; a long record's kind
COMPACT_LEN_BITS, COMPACT_TIME_SHIFT = 12, 15
COMPACT_LEN = 1 << COMPACT_LEN_BITS  # payloads shorter than this can be compact
COMPACT_RANGE = 1 << 17  # µs past its block's base a compact record holds (131 ms)
MEDIUM_RANGE = 1 << 34  # and a medium one (4.7 hours)
BLOCK_SHIFT = 13
BLOCK = 1 << BLOCK_SHIFT  # ring bytes per block-table entry
assert MAX_MESSAGE_BYTES_LIMIT <= LEN_MASK
assert (KIND_JSON, KIND_BYTES) == (1, 2)  # ring.read tells a compact record by 0 < tag < 3
SEQ_MASK = 0xFFFFFFFF
MAX_RING_SIZE = MAX_BYTES_LIMIT  # offsets are 32-bit

# registry
R_MAGIC, R_VERSION, R_MAX_QUEUES = 0, 1, 2
R_DEF_MAX_MESSAGES, R_DEF_MAX_BYTES, R_DEF_MAX_MESSAGE_BYTES = 3, 4, 5
R_CREATED_AT, R_FLAGS = 6, 7
R_LOCK = 504
FLAG_DESTROYED = 1
SLOT_BYTES = 256
SLOT_WORDS = SLOT_BYTES // 8
S_STATE_GEN, S_NAME_LEN, S_NAME = 0, 1, 2
S_MAX_MESSAGES, S_MAX_BYTES, S_MAX_MESSAGE_BYTES, S_CREATED_AT = 10, 11, 12, 13
S_MAX_DELIVERIES, S_DLQ_LEN, S_DLQ_NAME = 14, 15, 16
NAME_BYTES = 64
FREE, CREATING, ACTIVE, DELETING = 0, 1, 2, 3


def table_bytes(ring_size: int) -> int:
    """Bytes of the block table for a ring of ``ring_size`` bytes."""
    return -(-ring_size // BLOCK) * 8


def registry_bytes(max_queues: int) -> int:
    return HEADER_BYTES + max_queues * SLOT_BYTES


def pack_state(gen: int, state: int) -> int:
    return (gen << 32) | state


def unpack_state(word: int) -> tuple[int, int]:
    """Return (gen, state)."""
    return word >> 32, word & 0xFFFFFFFF
