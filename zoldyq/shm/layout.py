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
| 13    | epoch_us          | put side, ring empty only  | records' times count from it    |
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
``SW_DSIZE`` bytes) follows the ring in the same segment.

Put-side and get-side words sit on different cache lines and are written
under different locks, so a producer and a consumer never contend. The one
exception: holding both locks, an empty ring's tail and then its head go back
to offset 0 (``queue.SharedQueue.trim``, and on the C path a put that finds the
ring empty or a take that drains it, past ``TRIM_KEEP`` and only when the other
lock is free at once), so a stream keeps to a few cached pages.

Ring records (version 4): an 8-byte header, two little-endian u32s, ``length | tag << 27
| (time >> 32) << 30`` and ``time & 0xFFFFFFFF``, then the payload, padded to 8: a
100-byte message takes 112 bytes (version 3's 16-byte header took 120). ``length`` (27
bits) covers the 64 MiB maximum; ``tag`` (3 bits) is the kind (``KIND_JSON`` 1,
``KIND_BYTES`` 2), ``TAG_WRAP`` (3), or a kind plus ``TAG_LONG`` (4): then the time is
zero and the full enqueued_at (i64 µs) follows, 16 bytes as before. ``time`` is 34 bits
of µs past ``epoch_us`` (4.7 hours); its low 32 bits have a u32 of their own so that
the pure path's common case (within 71 minutes of the epoch) decodes with one
``struct`` call and no bit surgery. The producer moves the epoch (to its time less
``EPOCH_SLACK_US``, for a clock that steps back) only when it finds the ring empty and
its time out of range, else it writes a long record. A record never straddles the end
of the ring: when it does not fit, the producer writes a ``TAG_WRAP`` header (8
bytes, which an aligned tail always has room for) and starts at offset 0.

Why every queued record's time comes back exact: a record is dated against the epoch
at the time it is written, and the epoch only changes while no record lies between
head and tail (the put lock keeps other producers out, and a consumer only takes what
was committed before it loaded the tail). The epoch store is one aligned 8-byte store
before the records and the tail's: a producer that dies after it leaves an empty ring
with a new epoch, which nothing refers to yet. Consumers load the epoch after the tail,
so they see the epoch the records were written against (x86 stores stay in order).

Why this design and not a variable-length one (a varint length and a time delta against
the previous record, ~104 bytes when messages come fast): the delta chain needs the
consumer's last time kept crash-safely beside the head, every copy out of the ring
(leases, peeks, snapshots) must walk the chain from the head, and the record size
depends on the previous record's time. One fixed header, one epoch that moves only over
an empty ring, and a fallback to version 3's size is a single-store argument; it costs
8 bytes per 100-byte message more than the variable design's best case. A ring that is
never empty for 4.7 hours pays the long header (version 3's size) until it drains once.

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

LAYOUT_VERSION = 4  # 3: the locks are robust mutexes in the headers; 4: 8-byte records
QUEUE_MAGIC = int.from_bytes(b"ZOLDYQ.Q", "little")
REGISTRY_MAGIC = int.from_bytes(b"ZOLDYQ.R", "little")
HEADER_BYTES = 4096

# queue header words
W_MAGIC, W_VERSION, W_RING_SIZE, W_MAX_MESSAGES, W_MAX_MESSAGE_BYTES = 0, 1, 2, 3, 4
W_CREATED_AT, W_SLOT_GEN, W_FLAGS = 5, 6, 7
W_TAIL, W_ENQ_TOTAL, W_RESERVED, W_FULL_TOTAL, W_BYTES_IN, W_EPOCH = 8, 9, 10, 11, 12, 13
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

# records
LEN_BITS, TIME_HI_SHIFT = 27, 30  # header: (length | tag << 27 | time >> 32 << 30, time)
LEN_MASK = (1 << LEN_BITS) - 1
TAG_WRAP, TAG_LONG = 3, 4  # tags 1, 2: KIND_JSON, KIND_BYTES (from the api)
TIME_RANGE = 1 << 34  # µs past the epoch a short header holds
EPOCH_SLACK_US = 60_000_000  # a new epoch lies this far before the time that moved it
assert MAX_MESSAGE_BYTES_LIMIT <= LEN_MASK
assert (KIND_JSON, KIND_BYTES) == (1, 2)  # ring.read tells a kind by 0 < tag < TAG_WRAP
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


def registry_bytes(max_queues: int) -> int:
    return HEADER_BYTES + max_queues * SLOT_BYTES


def pack_state(gen: int, state: int) -> int:
    return (gen << 32) | state


def unpack_state(word: int) -> tuple[int, int]:
    """Return (gen, state)."""
    return word >> 32, word & 0xFFFFFFFF
