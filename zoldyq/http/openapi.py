"""``GET /openapi.json``: OpenAPI 3.1 for every route of ``routes.ROUTES``.

One entry per route name in ``OPERATIONS`` (summary, parameters, request
body, responses); ``document()`` fails loudly if a route is undocumented.
"""

from __future__ import annotations

import functools
import importlib.metadata
from typing import Any

import orjson

from zoldyq.http.routes import ROUTES
from zoldyq.shm.layout import MAX_MESSAGES_LIMIT, MAX_RING_SIZE
from zoldyq.shm.registry import MAX_MESSAGE_BYTES_LIMIT


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
AUTH = {"401": _err("missing or wrong bearer token (when ZOLDYQ_TOKEN is set)")}
BAD_NAME = {"400": _err("bad queue name (`bad_name`)")}
TOO_BIG = {"413": _err("body over ZOLDYQ_MAX_BODY_BYTES (`body_too_large`) or message over "
                       "the queue's max_message_bytes (`message_too_large`)")}
ENQUEUE_ERRORS = {
    **BAD_NAME, **AUTH, **TOO_BIG,
    "429": _err("queue at capacity (`queue_full`, with `queue_capacity`)"),
    "507": _err("namespace holds ZOLDYQ_MAX_QUEUES queues (`too_many_queues`) or /dev/shm is "
                "full (`storage_exhausted`)"),
}
_TEXT = {"schema": {"type": "string"}}
NOT_FOUND = {"404": _err("no such queue (`queue_not_found`)")}

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
                      **ENQUEUE_ERRORS,
                      "400": _err("bad JSON, no `payload` field, or bad name")},
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
            "400": _err("bad name, `timeout` or `max`"),
            **AUTH, **NOT_FOUND,
        },
    },
    "enqueue_batch": {
        "summary": "Enqueue a list of messages: all of them or none",
        "parameters": [NAME],
        "requestBody": {"required": True, **_json(_ref("BatchRequest"))},
        "responses": {"200": _resp("all queued", "BatchResponse"), **ENQUEUE_ERRORS,
                      "400": _err("bad JSON, no `payloads` list, too many messages, bad name")},
    },
    "list_queues": {
        "summary": "Every queue with its size and caps",
        "responses": {"200": _resp("the queues", "QueueList"), **AUTH},
    },
    "get_queue": {
        "summary": "One queue's size, caps and counters",
        "parameters": [NAME],
        "responses": {"200": _resp("the queue", "QueueInfo"), **BAD_NAME, **AUTH, **NOT_FOUND},
    },
    "put_queue": {
        "summary": "Create a queue, optionally with its own caps",
        "parameters": [NAME],
        "requestBody": {"required": False, **_json(_ref("QueueCaps"))},
        "responses": {
            "201": _resp("created", "QueueInfo"),
            "200": _resp("already exists with these caps", "QueueInfo"),
            "400": _err("bad name or caps (`bad_caps`, `bad_config`)"),
            **AUTH,
            "409": _err("exists with other caps (`queue_exists`)"),
            "507": _err("too many queues or /dev/shm full"),
        },
    },
    "delete_queue": {
        "summary": "Delete a queue and its messages",
        "parameters": [NAME],
        "responses": {"200": _resp("deleted", "Deleted"), **BAD_NAME, **AUTH, **NOT_FOUND},
    },
    "peek": {
        "summary": "The first `max` messages (default 10), without taking them",
        "parameters": [NAME],  # + max, whose maximum is a setting: see document()
        "responses": {"200": _resp("the head of the queue, oldest first", "PeekResponse"),
                      "400": _err("bad name or `max`"), **AUTH, **NOT_FOUND},
    },
    "clear_queue": {
        "summary": "Drop every message of a queue",
        "parameters": [NAME],
        "responses": {"200": _resp("cleared", "Cleared"), **BAD_NAME, **AUTH, **NOT_FOUND},
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
                      **AUTH},
    },
    "snapshot": {
        "summary": "Write a snapshot of every queue to ZOLDYQ_SNAPSHOT_DIR",
        "responses": {"200": _resp("written", "Snapshot"), **AUTH,
                      "501": _err("snapshots are disabled")},
    },
    "openapi": {
        "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3.1",
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    },
    "ui": {
        "summary": "The admin web page (HTML; its data comes from this API)",
        "responses": {"200": {"description": "the page",
                              "content": {"text/html": _TEXT}},
                      "404": _err("the page is turned off (`ui_off`, ZOLDYQ_UI=off)")},
    },
    "ui_asset": {
        "summary": "A static file of the admin page (ui.js, ui.css, favicon.svg)",
        "parameters": [{"name": "asset", "in": "path", "required": True, **_TEXT}],
        "responses": {"200": {"description": "the file", "content": {
                          "text/javascript": _TEXT, "text/css": _TEXT,
                          "image/svg+xml": _TEXT}},
                      "404": _err("no such file (`not_found`) or the page is off (`ui_off`)")},
    },
}

_INT = {"type": "integer"}
_STR = {"type": "string"}
_CAP = {"type": "integer", "minimum": 1}
_CAPS = {
    "max_messages": {**_CAP, "maximum": MAX_MESSAGES_LIMIT},
    "max_bytes": {**_CAP, "maximum": MAX_RING_SIZE,
                  "description": "ring bytes; must hold two records of max_message_bytes "
                                 "(else 400 `bad_config`)"},
    "max_message_bytes": {**_CAP, "maximum": MAX_MESSAGE_BYTES_LIMIT},
}
_COUNTERS = ("enqueued_total", "dequeued_total", "cleared_total", "queue_full_total",
             "dequeue_timeout_total", "bytes_in_total", "bytes_out_total")
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": _STR, "message": _STR},
              "additionalProperties": True},
    "EnqueueRequest": {"type": "object", "required": ["payload"],
                       "properties": {"payload": {"description": "any JSON value"}}},
    "EnqueueResponse": {"type": "object", "properties": {
        "queued": {"type": "boolean"}, "queue_name": _STR, "queue_size": _INT,
        "enqueued_at": {"type": "integer", "description": "µs since the epoch"}}},
    "BatchRequest": {"type": "object", "required": ["payloads"],
                     "properties": {"payloads": {"type": "array", "items": {}}}},
    "BatchResponse": {"type": "object", "properties": {
        "queued": {"type": "boolean"}, "queue_name": _STR, "count": _INT, "queue_size": _INT,
        "enqueued_at": _INT}},
    "DequeueResponse": {"type": "object", "required": ["payload", "queue_name"], "properties": {
        "payload": {}, "queue_name": _STR, "enqueued_at": _INT, "queue_size": _INT}},
    "BatchDequeueResponse": {"type": "object", "required": ["messages", "count"], "properties": {
        "messages": {"type": "array", "items": {"type": "object", "properties": {
            "payload": {"description": "the JSON value, or base64 text for a raw message"},
            "encoding": {"const": "base64"}, "enqueued_at": _INT}}},
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
    ]


def document(max_timeout: float = 30.0, max_batch: int = 1000) -> dict[str, Any]:
    """The document for a server with these limits (the query parameters' maxima)."""
    try:
        version = importlib.metadata.version("zoldyq")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op = dict(OPERATIONS[r.name], operationId=r.name)
        if r.name == "dequeue":
            op["parameters"] = _dequeue_params(max_timeout, max_batch)
        elif r.name == "peek":
            op["parameters"] = [NAME, _dequeue_params(max_timeout, max_batch)[2]]
        if not r.auth:
            op["security"] = []
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
def document_bytes(max_timeout: float = 30.0, max_batch: int = 1000) -> bytes:
    return orjson.dumps(document(max_timeout, max_batch))
