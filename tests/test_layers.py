"""The house keeps its layers: every import inside ``zoldyq/`` follows the rule.

    {shm, redis} <- broker <- ops <- {http, ws} <- serve <- cli

with ``errors``, ``settings`` and ``api`` shared by all and the package root
(the public API) above everything but the CLI. A module may import its own
layer and the layers below it, never one above. ``ops`` sits under the
transports because they serve its health, metrics and logs.
"""

from __future__ import annotations

import ast
from pathlib import Path

from zoldyq.errors import REQUEST_ERRORS

ROOT = Path(__file__).resolve().parents[1] / "zoldyq"
SHARED = {"zoldyq.errors", "zoldyq.settings", "zoldyq.api"}
RANK = {
    "zoldyq.shm": 0, "zoldyq.redis": 0,
    "zoldyq.broker": 1,
    "zoldyq.ops": 2,
    "zoldyq.http": 3, "zoldyq.ws": 3,
    "zoldyq.serve": 4,
    "zoldyq": 5,  # the public API re-exports engines and the SDK
    "zoldyq.client": 5, "zoldyq.connect": 5,
    "zoldyq.cli": 6,
}
ENGINES = {"zoldyq.shm", "zoldyq.redis"}
# Who may name an engine: the broker layer that picks one, and the public API.
ENGINE_USERS = {"zoldyq.broker", "zoldyq", "zoldyq.connect"}
# Engines are peers, and so are the transports: neither imports the other.
PEERS = {("zoldyq.shm", "zoldyq.redis"), ("zoldyq.redis", "zoldyq.shm"),
         ("zoldyq.http", "zoldyq.ws"), ("zoldyq.ws", "zoldyq.http")}


def layer(module: str) -> str:
    """The layer of a module, or of a name imported from one."""
    top = ".".join(module.split(".")[:2])
    return top if top in SHARED or top in RANK else "zoldyq"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every ``zoldyq`` import in the file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "zoldyq"]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "zoldyq":
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return out


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        me = layer(module_name(path, root))
        where = path.relative_to(root.parent)
        for line, target in imports(path):
            them = layer(target)
            if them in SHARED or them == me:
                continue
            if me in SHARED:
                bad.append(f"{where}:{line} shared module {me} imports {target}")
            elif (me, them) in PEERS or RANK[them] > RANK[me]:
                bad.append(f"{where}:{line} {me} imports {target}")
            elif them in ENGINES and me not in ENGINE_USERS:
                bad.append(f"{where}:{line} {me} reaches into the engine: {target}")
    return bad


def test_every_import_follows_the_layer_rule() -> None:
    """No module imports a layer above its own, and engines never import each other."""
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an engine importing a transport and a transport reaching into
    an engine are reported, imports of shared modules are not."""
    fake = tmp_path / "zoldyq"
    (fake / "shm").mkdir(parents=True)
    (fake / "ws").mkdir()
    (fake / "shm" / "bad.py").write_text("from zoldyq.http import core\nfrom zoldyq import api\n")
    (fake / "ws" / "bad.py").write_text("import zoldyq.errors\nfrom zoldyq.shm import ring\n")
    assert violations(fake) == [
        "zoldyq/shm/bad.py:1 zoldyq.shm imports zoldyq.http.core",
        "zoldyq/ws/bad.py:2 zoldyq.ws reaches into the engine: zoldyq.shm.ring",
    ]


def test_request_errors_use_declared_codes() -> None:
    """Every ``RequestError(status, code, ...)`` in the code uses a code of REQUEST_ERRORS
    with its status, so the OpenAPI document lists what the server really answers."""
    seen = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RequestError":
                status, code = node.args[0], node.args[1]
                if isinstance(status, ast.Constant) and isinstance(code, ast.Constant):
                    seen.append((code.value, status.value))
                elif isinstance(code, ast.JoinedStr):
                    continue  # f"missing_{key}": both spellings are in the table
    assert seen
    assert [(c, s) for c, s in seen if REQUEST_ERRORS.get(c) != s] == []
