"""The compiled hot path (``_speedups.c``), or None to run the pure-Python one.

The pattern of websockets' ``speedups.c``: the C module is optional (an install
without a compiler builds without it) and ``ZOLDYQ_PURE_PYTHON=1`` forces the
pure path. Both read and write the same words the same way, so processes on
either path share one namespace. A C module built for another layout is refused
here rather than trusted.
"""

from __future__ import annotations

import os
from typing import Any

from zoldyq import api
from zoldyq.shm import layout, ring, side


def _load() -> Any:
    if os.environ.get("ZOLDYQ_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from zoldyq.shm import _speedups
    except ImportError:  # built without a compiler: the pure path
        return None
    return _speedups


fast: Any = _load()

_MINE = {k: getattr(layout, k) for k in (
    "HEADER_BYTES", "W_RING_SIZE", "W_MAX_MESSAGES", "W_FLAGS", "W_TAIL", "W_ENQ_TOTAL",
    "W_RESERVED", "W_FULL_TOTAL", "W_BYTES_IN", "W_HEAD", "W_DEQ_TOTAL", "W_WAITERS",
    "W_TIMEOUTS", "W_BYTES_OUT", "W_ENQ_HIST", "W_DEQ_HIST", "FLAG_CLOSED", "KIND_JSON",
    "KIND_BYTES", "TAG_WRAP", "HIST_BUCKETS", "SW_DUE", "SW_READY", "SW_BYTES", "TRIM_KEEP",
    "TRIM_AGE_US", "W_PUT_LOCK", "W_GET_LOCK", "LOCK_WORDS", "LOCK_DIRTY",
    "W_MAX_MESSAGE_BYTES", "W_SLOT_GEN", "SW_NSLOTS", "SW_DSIZE", "SW_HIGH",
    "SW_FREE", "SW_TOKEN", "SW_DHEAD", "SW_DTAIL", "SW_SRES", "SW_DRES", "SW_LEASED",
    "SW_DELAYED", "SW_DEAD", "SW_ACKED", "SLOT_W", "W_TABLE", "LEN_BITS", "TIME_HI_SHIFT",
    "TAG_LONG", "TAG_MEDIUM", "TAG_MASK", "LEN_SHIFT", "KIND_SHIFT", "COMPACT_LEN",
    "COMPACT_TIME_SHIFT", "COMPACT_RANGE", "MEDIUM_RANGE", "BLOCK_SHIFT", "LAYOUT_VERSION",
)} | {k: getattr(side, k) for k in (
    "S_DEADLINE", "S_KEY", "S_SEQ", "S_POS", "S_ENQ", "S_ORIGIN", "S_LENKIND", "S_AUX", "FREE",
    "PENDING", "LEASED", "DHDR", "SKIP",
)} | {"HDR": ring.HDR}

if fast is not None and (fast.LAYOUT != _MINE or fast.HIST_BOUNDS_NS != layout.HIST_BOUNDS_NS):
    raise ImportError("zoldyq.shm._speedups was built for another layout: rebuild it")

ENABLED: bool = fast is not None


def json_records(array: bytes, parsed: list[Any], kind: int) -> api.CheckedRecords:
    """(kind, exact bytes) of each element of a JSON array that orjson already parsed
    (``parsed``): a batch body's payloads. One C scan when the module is built (no second
    parse: the array is valid JSON, so its depth-1 commas are the element boundaries),
    else ``api.json_items``."""
    out = api.CheckedRecords()
    if fast is None:
        out.extend([(kind, p) for p in api.json_items(array, parsed)])
    else:
        fast.json_items(array, out, kind)
    return out
