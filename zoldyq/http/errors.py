"""Request errors of the HTTP layer, and the one mapping of any exception to a reply.

Engine errors (``zoldyq.errors``) already carry ``code``, ``http_status`` and
``fields()``; ``RequestError`` adds the few that only exist over HTTP (bad
query parameters, bodies, auth). ``error_reply`` is the single place where an
exception becomes a status and a JSON body; both app shells call it.
"""

from __future__ import annotations

import logging
import math

import falcon
import orjson

from zoldyq.errors import RequestError, ZoldyQError

log = logging.getLogger("zoldyq.http")


def body_too_large(size: int | None, limit: int) -> RequestError:
    what = "request body" if size is None else f"request body of {size} bytes"
    return RequestError(
        413, "body_too_large", f"{what} exceeds the limit of {limit} bytes", max_body_bytes=limit
    )


def complete(body: bytes, size: int) -> bytes:
    """``body`` if it has the ``Content-Length`` announced; else 400 ``incomplete_body``.

    A client that goes away (or stalls past gunicorn's timeout) mid-body leaves the
    server a short read, not an error: storing it would enqueue a truncated message.
    """
    if len(body) != size:
        raise RequestError(400, "incomplete_body",
                           f"request body ended after {len(body)} of its {size} bytes")
    return body


_FALCON_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def error_reply(ex: BaseException, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    """(status, JSON body, extra headers) for any exception; logs it in one line.

    Bad input and full queues are the client's business, counted by the
    request metrics and logged only at debug level (a burst of 429s must not
    write a line each); a known server-side condition (full storage, broken
    namespace) is logged at warning; anything else is a bug, logged with its
    stack trace here and never sent.
    """
    headers: dict[str, str] = {}
    if isinstance(ex, ZoldyQError):
        status, code, message = ex.http_status, ex.code, str(ex)
        body = {"error": code, "message": message, **ex.fields()}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        retry_after = getattr(ex, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        level = logging.DEBUG if status < 500 else logging.WARNING
        log.log(level, "%s %s -> %d %s: %s", method, path, status, code, message)
    elif isinstance(ex, falcon.HTTPError):
        status = ex.status_code
        code = _FALCON_CODES.get(status, "http_error")
        message = ex.description or ex.title or code
        shown = path if len(path) <= 80 else path[:77] + "..."  # never echo unbounded input
        if status == 404:
            message = f"no route for {method[:20]} {shown}"
        elif status == 405:
            message = f"method {method[:20]} is not allowed on {shown}"
        body = {"error": code, "message": message}
        headers.update(ex.headers or {})
        log.debug("%s %s -> %d %s", method, path, status, code)
    else:
        status, code = 500, "internal_error"
        body = {"error": code, "message": "internal error (logged by the server)"}
        log.error("%s %s -> 500: %r", method, path, ex, exc_info=ex)
    return status, orjson.dumps(body), headers
