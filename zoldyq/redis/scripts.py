"""The Lua scripts, each one atomic operation on one queue (see ``lua/common.lua``)."""

from __future__ import annotations

import hashlib
from importlib import resources

from zoldyq.redis import state

NAMES = (
    "put", "get", "ack", "nack", "extend", "requeue", "peek", "clear", "stats", "init",
    "take_in", "redrive", "unwait", "sent",
)  # fmt: skip


def source(name: str) -> str:
    """The script ``name`` with the shared prelude (and the state record's layout) in front."""
    lua = resources.files("zoldyq.redis") / "lua"
    return "\n".join((state.lua_prelude(), (lua / "common.lua").read_text(),
                      (lua / f"{name}.lua").read_text()))


SOURCES = {name: source(name) for name in NAMES}
SHAS = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in SOURCES.items()}
