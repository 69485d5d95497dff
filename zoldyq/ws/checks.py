"""Who may open a stream and on what: path, bearer token, Origin. Pure functions."""

from __future__ import annotations

import hmac
from urllib.parse import parse_qs, unquote, urlsplit

from zoldyq import api
from zoldyq.errors import BadPath

OPERATIONS = ("enqueue", "dequeue")


def parse_path(target: str) -> tuple[str, str]:
    """(queue name, operation) of a request target such as ``/queues/jobs/dequeue?x=1``.

    The name is percent-decoded, as HTTP's router does (``/queues/a%2Db/...`` is
    queue ``a-b`` on both, and ``%2e%2e`` is ``..``, which is not a name).

    Raises:
        BadPath: any other shape of path.
        InvalidName: the queue name is not valid.
    """
    parts = urlsplit(target).path.split("/")
    if len(parts) != 4 or parts[0] or parts[1] != "queues" or parts[3] not in OPERATIONS:
        raise BadPath(urlsplit(target).path)
    return api.check_queue_name(unquote(parts[2], errors="replace")), parts[3]


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
