# Types of the C module (zoldyq/shm/_speedups.c); see speedups.py.
from collections.abc import Callable, Sequence
from typing import Any

LAYOUT: dict[str, int]
HIST_BOUNDS_NS: tuple[int, ...]

def atomic_add(buffer: Any, word_index: int, n: int, /) -> None: ...
def json_items(array: bytes, out: list[Any], kind: int | None, /) -> None: ...

class Fast:
    trim_due: bool
    busy: bool
    def __init__(
        self,
        buffer: Any,
        name: str,
        put_lock: Any = None,
        get_lock: Any = None,
        bell: str | None = None,
        reserve: Callable[[int], None] | None = None,
        reserve_side: Callable[[int, int], None] | None = None,
    ) -> None: ...
    def put_one(self, kind: int, data: Any, t0: int, /) -> tuple[int, int] | None: ...
    def put(
        self, records: Sequence[tuple[int, Any]], t0: int, max_message_bytes: int = ...,
        json_checked: bool = ..., /,
    ) -> tuple[int, int] | None: ...
    def put_json(
        self, array: bytes, count: int, t0: int, max_message_bytes: int, /,
    ) -> tuple[int, int] | None: ...
    def take(
        self, max_n: int, t0: int, was_waiting: bool, keep_waiting: bool, tag: object,
        make: type[tuple[Any, ...]] | None = None, /,
    ) -> list[Any] | None: ...
    def lease(
        self, max_n: int, t0: int, was_waiting: bool, keep_waiting: bool, tag: object,
        make: type[tuple[Any, ...]] | None, lease_us: int, now_ns: int, extra: object, /,
    ) -> list[Any] | None: ...
    def ack(self, lease_ids: Sequence[str], now_ns: int, /) -> list[str] | None: ...
    def ack_one(self, lease_id: str, now_ns: int, /) -> bool | None: ...
    def release(self) -> None: ...
