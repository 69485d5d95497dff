"""``GET /openapi.json``: OpenAPI 3.1 for every route of the table it is given.

One entry per route name in ``OPERATIONS`` (summary, parameters, request
body, responses); ``document()`` fails loudly if a route is undocumented.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from typing import Any, Protocol

import orjson

from zoldyq.api import MAX_BYTES_LIMIT, MAX_MESSAGE_BYTES_LIMIT, MAX_MESSAGES_LIMIT
from zoldyq.errors import error_statuses
from zoldyq.http import ui


class RouteLike(Protocol):
    name: str
    method: str
    path: str
    auth: bool


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _resp(description: str, schema: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema:
        out.update(_json(_ref(schema)))
    return out


def _err(description: str) -> dict[str, Any]:
    return _resp(description, "Error")


NAME = {"name": "name", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}}
def _errors(*codes: str) -> dict[str, Any]:
    """Error responses for these codes, grouped by the status each error class declares."""
    statuses = error_statuses()
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(statuses[code], []).append(code)
    return {str(status): _err(", ".join(f"`{c}`" for c in cs))
            for status, cs in sorted(by_status.items())}


_TEXT = {"schema": {"type": "string"}}
# gunicorn answers these itself, before any route runs (its limit_request_line and
# limit_request_field_size): every operation may meet them, a query string too long included.
SERVER_LIMITS = {
    "414": {"description": "request line over the server's limit (gunicorn's, 4094 bytes)"},
    "431": {"description": "a request header over the server's limit (gunicorn's)"},
}
# Every request may meet these: a bad token, a foreign page, an unusable namespace.
COMMON = ("unauthorized", "forbidden_origin", "namespace_broken")
QUEUE = (*COMMON, "bad_name", "queue_busy")
BODY = ("bad_json", "body_too_large", "incomplete_body")
PUT = (*QUEUE, *BODY, "message_too_large", "queue_full", "too_many_queues",
       "storage_exhausted")

OPERATIONS: dict[str, dict[str, Any]] = {
    "enqueue": {
        "summary": "Enqueue one message (created on first use)",
        "parameters": [NAME],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": _ref("EnqueueRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                         "description": "stored and returned as raw bytes"},
        }},
        "responses": {"200": _resp("queued", "EnqueueResponse"),
                      **_errors(*PUT, "missing_payload", "bad_payload", "bad_delay")},
    },
    "dequeue": {
        "summary": "Dequeue one message, or a batch with `max`, waiting up to `timeout`",
        "parameters": [NAME],  # + timeout and max, whose maxima are settings: see document()
        "responses": {
            "200": {"description": "a message (a raw one comes back as its bytes, with "
                                   "X-Zoldyq-Queue-Name, X-Zoldyq-Enqueued-At and "
                                   "X-Zoldyq-Queue-Size headers), or a batch",
                    "content": {
                        "application/json": {"schema": {"oneOf": [
                            _ref("DequeueResponse"), _ref("BatchDequeueResponse")]}},
                        "application/octet-stream": {"schema": {"type": "string",
                                                                "format": "binary"}},
                    }},
            "204": _resp("no message within the timeout (or the server is stopping)"),
            **_errors(*QUEUE, "bad_timeout", "bad_max", "bad_lease", "queue_not_found",
                      "queue_full"),
        },
    },
    "ack": {
        "summary": "Remove leased messages for good: one `lease_id`, or a batch of `lease_ids`",
        "parameters": [NAME],
        "requestBody": {"required": True, **_json(_ref("AckRequest"))},
        "responses": {"200": _resp("acked (a batch lists the ids not held)", "AckResponse"),
                      **_errors(*QUEUE, *BODY, "missing_lease_id", "bad_lease",
                                "lease_expired", "queue_not_found")},
    },
    "nack": {
        "summary": "Give a leased message back at the head, or after `delay` seconds",
        "parameters": [NAME],
        "requestBody": {"required": True, **_json(_ref("NackRequest"))},
        "responses": {"200": _resp("given back, or dead-lettered past max_deliveries",
                                   "NackResponse"),
                      **_errors(*QUEUE, *BODY, "missing_lease_id", "bad_lease", "bad_delay",
                                "lease_expired", "queue_not_found")},
    },
    "extend": {
        "summary": "Hold a lease `lease` seconds from now",
        "parameters": [NAME],
        "requestBody": {"required": True, **_json(_ref("ExtendRequest"))},
        "responses": {"200": _resp("the new deadline", "ExtendResponse"),
                      **_errors(*QUEUE, *BODY, "missing_lease_id", "bad_lease",
                                "lease_expired", "queue_not_found")},
    },
    "redrive": {
        "summary": "On a dead-letter queue: move its messages back to their original queues",
        "parameters": [NAME],
        "responses": {"200": _resp("moved", "RedriveResponse"),
                      **_errors(*QUEUE, "queue_not_found", "queue_full")},
    },
    "enqueue_batch": {
        "summary": "Enqueue a list of messages: all of them or none",
        "parameters": [NAME],
        "requestBody": {"required": True, **_json(_ref("BatchRequest"))},
        "responses": {"200": _resp("all queued", "BatchResponse"),
                      **_errors(*PUT, "missing_payloads", "bad_payloads", "batch_too_large",
                                "bad_payload", "bad_delay")},
    },
    "list_queues": {
        "summary": "Every queue with its size and caps",
        "responses": {"200": _resp("the queues", "QueueList"), **_errors(*COMMON)},
    },
    "get_queue": {
        "summary": "One queue's size, caps and counters",
        "parameters": [NAME],
        "responses": {"200": _resp("the queue", "QueueInfo"),
                      **_errors(*QUEUE, "queue_not_found")},
    },
    "put_queue": {
        "summary": "Create a queue, optionally with its own caps",
        "parameters": [NAME],
        "requestBody": {"required": False, **_json(_ref("QueueCaps"))},
        "responses": {
            "201": _resp("created", "QueueInfo"),
            "200": _resp("already exists with these caps", "QueueInfo"),
            **_errors(*QUEUE, *BODY, "bad_caps", "bad_config", "queue_exists",
                      "too_many_queues", "storage_exhausted"),
        },
    },
    "delete_queue": {
        "summary": "Delete a queue and its messages",
        "parameters": [NAME],
        "responses": {"200": _resp("deleted", "Deleted"), **_errors(*QUEUE, "queue_not_found")},
    },
    "clear_queue": {
        "summary": "Drop every message of a queue",
        "parameters": [NAME],
        "responses": {"200": _resp("cleared", "Cleared"), **_errors(*QUEUE, "queue_not_found")},
    },
    "info": {
        "summary": "Version, WebSocket port (same host) and limits: what the client SDK reads",
        "responses": {"200": _resp("this server", "Info"), **_errors(*COMMON)},
    },
    "peek": {
        "summary": "The first `max` messages (default 10), without taking them",
        "parameters": [NAME],  # + max, whose maximum is a setting: see document()
        "responses": {"200": _resp("the head of the queue, oldest first", "PeekResponse"),
                      **_errors(*QUEUE, "bad_max", "queue_not_found")},
    },
    "health": {
        "summary": "Status, uptime and per-queue size, capacity, utilization and totals",
        "responses": {"200": _resp("healthy", "Health"),
                      "503": _resp("unhealthy, with a reason", "Health")},
    },
    "metrics": {
        "summary": "Prometheus text exposition",
        "responses": {"200": {"description": "metrics",
                              "content": {"text/plain": {"schema": {"type": "string"}}}},
                      **_errors("unauthorized")},
    },
    "snapshot": {
        "summary": "Write a snapshot of every queue to ZOLDYQ_SNAPSHOT_DIR",
        "responses": {"200": _resp("written", "Snapshot"),
                      **_errors(*COMMON, *BODY, "bad_snapshot_request", "snapshots_disabled",
                                "snapshot_not_found", "bad_snapshot", "snapshot_conflict",
                                "bad_name", "queue_not_found", "storage_exhausted",
                                "too_many_queues")},
    },
    "openapi": {
        "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    },
    "ui": {
        "summary": "The admin web page (HTML; its data comes from this API)",
        "responses": {"200": {"description": "the page", "content": {"text/html": _TEXT}},
                      **_errors("ui_off")},
    },
    "ui_asset": {
        "summary": "A static file of the admin page (ui.js, ui.css, favicon.svg; none: the page)",
        "parameters": [{"name": "name", "in": "path", "required": True, **_TEXT}],
        "responses": {"200": {"description": "the file", "content": {
                          "text/javascript": _TEXT, "text/css": _TEXT, "image/svg+xml": _TEXT,
                          "text/html": _TEXT}},
                      **_errors("ui_off", "ui_file_not_found")},
    },
}

_INT = {"type": "integer"}
_STR = {"type": "string"}
_CAP = {"type": "integer", "minimum": 1}
_CAPS = {
    "max_messages": {**_CAP, "maximum": MAX_MESSAGES_LIMIT},
    "max_bytes": {**_CAP, "maximum": MAX_BYTES_LIMIT,
                  "description": "ring bytes; must hold two records of max_message_bytes "
                                 "(else 400 `bad_config`)"},
    "max_message_bytes": {**_CAP, "maximum": MAX_MESSAGE_BYTES_LIMIT},
    "max_deliveries": {**_CAP, "description": "leases a message may fail before it moves "
                                               "to the dead-letter queue"},
    "dead_letter_queue": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$",
                          "description": "default `<name>.dlq`"},
}
_DELIVERY = {
    "delay": {"type": "number", "minimum": 0, "maximum": 366 * 86_400,
              "description": "seconds before it is visible"},
    "deliver_at": {"type": "integer", "minimum": 0, "maximum": 1 << 62,
                   "description": "µs since the epoch (with delay too: the later of the two)"},
}
_LEASE_ID = {"type": "string", "minLength": 1, "maxLength": 64}
_LEASE = {"lease_id": _STR, "delivery_count": _INT,
          "lease_expires_at": {"type": "integer", "description": "µs since the epoch"}}
_COUNTERS = ("enqueued_total", "dequeued_total", "cleared_total", "queue_full_total",
             "dequeue_timeout_total", "bytes_in_total", "bytes_out_total", "inflight",
             "delayed", "acked_total", "redelivered_total", "dead_lettered_total",
             "requeued_total")
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": _STR, "message": _STR},
              "additionalProperties": True},
    "EnqueueRequest": {"type": "object", "required": ["payload"],
                       "properties": {"payload": {"description": "any JSON value"},
                                      **_DELIVERY}},
    "EnqueueResponse": {"type": "object", "properties": {
        "queued": {"type": "boolean"}, "queue_name": _STR, "queue_size": _INT,
        "enqueued_at": {"type": "integer", "description": "µs since the epoch"},
        "deliver_at": _INT}},
    "BatchRequest": {"type": "object", "required": ["payloads"],
                     "properties": {"payloads": {"type": "array", "items": {}}, **_DELIVERY}},
    "BatchResponse": {"type": "object", "properties": {
        "queued": {"type": "boolean"}, "queue_name": _STR, "count": _INT, "queue_size": _INT,
        "enqueued_at": _INT, "deliver_at": _INT}},
    "DequeueResponse": {"type": "object", "required": ["payload", "queue_name"], "properties": {
        "payload": {}, "queue_name": _STR, "enqueued_at": _INT, "queue_size": _INT, **_LEASE}},
    "BatchDequeueResponse": {"type": "object", "required": ["messages", "count"], "properties": {
        "messages": {"type": "array", "items": {"type": "object", "properties": {
            "payload": {"description": "the JSON value, or base64 text for a raw message"},
            "encoding": {"const": "base64"}, "enqueued_at": _INT, **_LEASE}}},
        "count": _INT, "queue_name": _STR, "queue_size": _INT}},
    "PeekResponse": {"type": "object", "required": ["messages", "count", "queue_size"],
                     "properties": {
        "messages": {"type": "array", "items": {"type": "object", "properties": {
            "payload": {"description": "the JSON value, or base64 text for a raw message"},
            "encoding": {"const": "base64"}, "enqueued_at": _INT,
            "size": {**_INT, "description": "stored bytes"}}}},
        "count": _INT, "queue_name": _STR, "queue_size": _INT}},
    "QueueCaps": {"type": "object", "additionalProperties": False, "properties": _CAPS},
    "QueueInfo": {"type": "object", "properties": {
        "name": _STR, "size": _INT, "capacity": _INT, "bytes": _INT, "max_bytes": _INT,
        "max_message_bytes": _INT, "utilization": {"type": "number"}, "waiters": _INT,
        "created_at": _INT, "created": {"type": "boolean"},
        "oldest_age_seconds": {"type": "number"},
        **{c: _INT for c in _COUNTERS}}},
    "QueueList": {"type": "object", "properties": {
        "queues": {"type": "array", "items": _ref("QueueInfo")}, "count": _INT}},
    "Deleted": {"type": "object", "properties": {"deleted": {"type": "boolean"},
                                                 "queue_name": _STR}},
    "Cleared": {"type": "object", "properties": {"cleared": _INT, "queue_name": _STR,
                                                 "queue_size": _INT}},
    "Health": {"type": "object", "properties": {
        "status": _STR, "uptime_seconds": {"type": "number"}, "total_queues": _INT,
        "queues": {"type": "object", "additionalProperties": {"type": "object"}}}},
    "Snapshot": {"type": "object", "additionalProperties": True},
    "Info": {"type": "object", "properties": {
        "version": _STR, "namespace": _STR,
        "websocket_port": {"type": ["integer", "null"]}, "websocket_tls": {"type": "boolean"},
        "max_timeout": {"type": "number"}, "max_batch": _INT, "max_queues": _INT,
        "defaults": {"type": "object", "additionalProperties": _INT}}},
    "AckRequest": {"type": "object", "properties": {
        "lease_id": _LEASE_ID, "lease_ids": {"type": "array", "items": _LEASE_ID}},
        "oneOf": [{"required": ["lease_id"]}, {"required": ["lease_ids"]}],
        "description": "one `lease_id`, or a batch of `lease_ids`; both at once is a 400"},
    "AckResponse": {"type": "object", "properties": {
        "acked": _INT, "not_held": {"type": "array", "items": _STR}, "queue_name": _STR}},
    "NackRequest": {"type": "object", "required": ["lease_id"], "properties": {
        "lease_id": _LEASE_ID, "delay": {"type": "number", "minimum": 0,
                                         "maximum": 366 * 86_400}}},
    "NackResponse": {"type": "object", "properties": {
        "nacked": _INT, "queue_name": _STR, "dead_lettered": {"type": "boolean"},
        "dead_letter_queue": _STR}},
    "ExtendRequest": {"type": "object", "required": ["lease_id", "lease"], "properties": {
        "lease_id": _LEASE_ID, "lease": {"type": "number", "exclusiveMinimum": 0,
                                         "maximum": 43_200}}},
    "ExtendResponse": {"type": "object", "properties": {
        "lease_expires_at": _INT, "queue_name": _STR}},
    "RedriveResponse": {"type": "object", "properties": {"redriven": _INT, "queue_name": _STR}},
}


def _dequeue_params(max_timeout: float, max_batch: int) -> list[dict[str, Any]]:
    return [
        NAME,
        {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0,
         "maximum": max_timeout, "default": 0},
         "description": "seconds to wait for a message (max ZOLDYQ_DEQUEUE_MAX_TIMEOUT)"},
        {"name": "max", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                  "maximum": max_batch},
         "description": "return a batch of up to `max` messages (max ZOLDYQ_MAX_BATCH)"},
        {"name": "lease", "in": "query", "schema": {"type": "number", "exclusiveMinimum": 0,
                                                    "maximum": 43_200},
         "description": "lease the messages for this many seconds: ack, nack or extend them "
                        "by `lease_id`; unacked ones come back at the head"},
    ]


def document(
    routes: Iterable[RouteLike], max_timeout: float = 30.0, max_batch: int = 1000
) -> dict[str, Any]:
    """The document for ``routes`` on a server with these limits (the query parameters' maxima)."""
    try:
        version = importlib.metadata.version("zoldyq")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op = dict(OPERATIONS[r.name], operationId=r.name)
        if r.name == "dequeue":
            op["parameters"] = _dequeue_params(max_timeout, max_batch)
        elif r.name == "peek":
            op["parameters"] = [NAME, _dequeue_params(max_timeout, max_batch)[2]]
        if r.name not in ui.READS:  # a change the read-only admin page may not ask for
            op["responses"] = {**op["responses"], **_errors("ui_read_only")}
        if not r.auth:
            op["security"] = []
        op["responses"] = {**op["responses"], **SERVER_LIMITS}
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "ZoldyQ", "version": version,
                 "description": "In-memory FIFO queues in POSIX shared memory."},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@functools.cache
def document_bytes(
    routes: Iterable[RouteLike], max_timeout: float = 30.0, max_batch: int = 1000
) -> bytes:
    return orjson.dumps(document(routes, max_timeout, max_batch))
