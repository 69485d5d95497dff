"""Who may open a stream and on what: path, bearer token, Origin. Pure functions."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlsplit

from zoldyq import api
from zoldyq.errors import BadPath

OPERATIONS = ("enqueue", "dequeue")


def parse_path(target: str) -> tuple[str, str]:
    """(queue name, operation) of a request target such as ``/queues/jobs/dequeue?x=1``.

    Raises:
        BadPath: any other shape of path.
        InvalidName: the queue name is not valid.
    """
    parts = urlsplit(target).path.split("/")
    if len(parts) != 4 or parts[0] or parts[1] != "queues" or parts[3] not in OPERATIONS:
        raise BadPath(urlsplit(target).path)
    return api.check_queue_name(parts[2]), parts[3]


def token_ok(expected: str | None, authorization: str | None, target: str) -> bool:
    """Whether ``Authorization: Bearer <t>`` or ``?token=<t>`` carries the expected token.

    Browsers cannot set headers on a WebSocket, hence the query parameter.
    """
    if not expected:
        return True
    offered = []
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
    offered += parse_qs(urlsplit(target).query).get("token", [])
    want = expected.encode()
    return any(hmac.compare_digest(t.encode(), want) for t in offered)


def origins(setting: str | None) -> list[str | None] | None:
    """The ``origins`` argument of ``websockets.serve`` for the ``ws_origins`` setting.

    Unset: any Origin. Set: those values, plus requests without an Origin
    header (non-browser clients, which could forge the header anyway).
    """
    if not setting:
        return None
    allowed: list[str | None] = [o.strip() for o in setting.split(",") if o.strip()]
    return [*allowed, None]
