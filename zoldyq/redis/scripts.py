"""The Lua scripts, each one atomic operation on one queue (see ``lua/common.lua``)."""

from __future__ import annotations

from importlib import resources

NAMES = (
    "put", "get", "ack", "nack", "extend", "requeue", "peek", "clear", "stats", "init",
    "take_in", "redrive", "unwait",
)  # fmt: skip


def source(name: str) -> str:
    """The script ``name`` with the shared prelude in front."""
    lua = resources.files("zoldyq.redis") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


SOURCES = {name: source(name) for name in NAMES}
