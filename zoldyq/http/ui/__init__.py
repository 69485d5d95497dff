"""The admin page: ``GET /ui`` and its few static files, and the read-only rule.

The page is plain HTML, CSS and JavaScript shipped in ``static/`` (no build
step, nothing from another host: the Content-Security-Policy says so to the
browser too). It works through the JSON API like any client, marking each
request with ``X-Zoldyq-UI: 1``. With ``ZOLDYQ_UI=read-only`` the page hides
its actions and the server refuses, with 403 ``ui_read_only``, any request
carrying the marker except the reads the page needs; the marker is a
courtesy, not a defence (the token is that), so a curl without it still acts.
"""

from __future__ import annotations

from importlib import resources

from zoldyq.errors import RequestError
from zoldyq.http.core import Call, Ctx, Reply

MARKER = "X-Zoldyq-UI"
# the routes the page may call in read-only mode (everything else changes state)
READS = frozenset({"list_queues", "get_queue", "peek", "health", "metrics", "openapi",
                   "ui", "ui_asset"})
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}


def _load() -> dict[str, tuple[bytes, str]]:
    out = {}
    for f in resources.files(__package__).joinpath("static").iterdir():
        suffix = f.name[f.name.rfind("."):]
        if suffix in _TYPES:
            out[f.name] = (f.read_bytes(), _TYPES[suffix])
    return out


_FILES = _load()


def _off() -> RequestError:
    return RequestError(404, "ui_off", "the admin page is turned off (ZOLDYQ_UI=off)")


def page(ctx: Ctx, call: Call) -> Reply:
    """The HTML page, told its mode and whether the server wants a token."""
    mode, has_token = ctx.settings.ui, ctx.token is not None
    if mode == "off":
        raise _off()
    html = _FILES["index.html"][0].replace(b"{{mode}}", mode.encode()) \
        .replace(b"{{auth}}", b"token" if has_token else b"none")
    return Reply(200, html, _TYPES[".html"], HEADERS)


def asset(ctx: Ctx, call: Call, name: str) -> Reply:
    """One static file by name (only the shipped ones; never a path); ``/ui/`` is the page."""
    if name == "":
        return page(ctx, call)
    if ctx.settings.ui == "off":
        raise _off()
    found = _FILES.get(name) if name != "index.html" else None
    if found is None:
        raise RequestError(404, "ui_file_not_found", "no such file of the admin page")
    return Reply(200, found[0], found[1], HEADERS)


def check(mode: str, route: str, marker: str | None) -> None:
    """Refuse (403 ``ui_read_only``) a state-changing request from the page in read-only mode."""
    if mode == "read-only" and marker and route not in READS:
        raise RequestError(403, "ui_read_only",
                           "the admin page is read-only on this server (ZOLDYQ_UI=read-only)")
