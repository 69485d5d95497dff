"""Every error ZoldyQ raises, with the HTTP status a transport should answer.

    ZoldyQError
    ├── InvalidName            (ValueError)    400 bad_name
    ├── InvalidPayload         (ValueError)    400 bad_payload
    ├── ConfigError            (ValueError)    400 bad_config
    ├── MessageTooLarge        (ValueError)    413 message_too_large
    ├── QueueFull              (queue.Full)    429 queue_full
    ├── QueueNotFound          (LookupError)   404 queue_not_found
    ├── QueueExists                            409 queue_exists
    ├── TooManyQueues                          507 too_many_queues
    ├── StorageExhausted                       507 storage_exhausted
    ├── ClosedError                            503 closed          (you closed or deleted it)
    │   └── QueueDeleted                       404 queue_not_found
    ├── LeaseExpired           (LookupError)   409 lease_expired
    ├── QueueBusy                              503 queue_busy      (retry_after)
    ├── NamespaceBusy                          409 namespace_busy  (another server owns it)
    └── BrokenError                            503 namespace_broken (it broke under you)
        ├── NamespaceNotFound  (FileNotFoundError)
        ├── AccessDenied       (PermissionError)
        ├── LayoutMismatch
        └── BackendUnavailable                 503 backend_unavailable

    and, raised by the transports and operations on top of the engine:

    ZoldyQError
    ├── RequestError                           4xx (status and code per request: http/;
    │                                          the HTTP client raises it for such answers)
    ├── BadPath                                404 bad_path            (ws/)
    ├── BadFrame               (ValueError)    400 bad_request         (ws/)
    ├── SnapshotError                          422 bad_snapshot        (ops/snapshot)
    ├── SnapshotConflict                       409 snapshot_conflict
    ├── SnapshotNotFound   (FileNotFoundError) 404 snapshot_not_found
    ├── SnapshotsDisabled                      404 snapshots_disabled
    └── InvalidName
        └── BadSnapshotName                    400 bad_name

Each class carries structured fields and renders its sentence in ``__str__``;
``code`` and ``http_status`` let a transport map any of them with one handler.
"""

from __future__ import annotations

import queue


class ZoldyQError(Exception):
    """Root of every ZoldyQ error."""

    code = "internal_error"
    http_status = 500

    def fields(self) -> dict[str, object]:
        """Structured fields a transport may add to its error body."""
        return {}


class InvalidName(ZoldyQError, ValueError):
    code = "bad_name"
    http_status = 400

    def __init__(self, name: object, what: str = "queue name") -> None:
        super().__init__(name, what)
        self.name = name
        self.what = what

    def __str__(self) -> str:
        shown = repr(self.name)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        return f"invalid {self.what} {shown}: use 1-64 characters from A-Z a-z 0-9 _ . -"


class InvalidPayload(ZoldyQError, ValueError):
    code = "bad_payload"
    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return f"payload is not valid JSON: {self.reason}"


class ConfigError(ZoldyQError, ValueError):
    code = "bad_config"
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class MessageTooLarge(ZoldyQError, ValueError):
    code = "message_too_large"
    http_status = 413

    def __init__(self, size: int, limit: int, queue_name: str | None = None) -> None:
        super().__init__(size, limit, queue_name)
        self.size = size
        self.limit = limit
        self.queue_name = queue_name

    def __str__(self) -> str:
        return f"message of {self.size} bytes exceeds the limit of {self.limit} bytes"

    def fields(self) -> dict[str, object]:
        return {"size": self.size, "max_message_bytes": self.limit}


class QueueFull(ZoldyQError, queue.Full):
    code = "queue_full"
    http_status = 429
    retry_after: float | None = None  # seconds, when a server said (Retry-After)

    def __init__(
        self, queue_name: str, capacity: int, size: int, max_bytes: int, needed_bytes: int = 0
    ) -> None:
        super().__init__(queue_name, capacity, size, max_bytes, needed_bytes)
        self.queue_name = queue_name
        self.capacity = capacity
        self.size = size
        self.max_bytes = max_bytes
        self.needed_bytes = needed_bytes

    def __str__(self) -> str:
        if self.needed_bytes:
            return (
                f"Queue '{self.queue_name}' is at capacity: no room for {self.needed_bytes} "
                f"more bytes in {self.max_bytes}"
            )
        return f"Queue '{self.queue_name}' is at capacity"

    def fields(self) -> dict[str, object]:
        return {
            "queue_name": self.queue_name,
            "queue_capacity": self.capacity,
            "queue_size": self.size,
            "queue_max_bytes": self.max_bytes,
        }


class _AboutQueue(ZoldyQError):
    """An error about one named queue; ``sentence`` has a ``{}`` for its name."""

    sentence = ""

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.queue_name = queue_name

    def __str__(self) -> str:
        return self.sentence.format(self.queue_name)

    def fields(self) -> dict[str, object]:
        return {"queue_name": self.queue_name}


class QueueNotFound(_AboutQueue, LookupError):
    code = "queue_not_found"
    http_status = 404
    sentence = "Queue '{}' does not exist"


class QueueExists(_AboutQueue):
    code = "queue_exists"
    http_status = 409
    sentence = "Queue '{}' already exists"

    def __init__(self, queue_name: str, other_limits: bool = False) -> None:
        super().__init__(queue_name)
        self.other_limits = other_limits

    def __str__(self) -> str:
        return super().__str__() + (" with other limits" if self.other_limits else "")


class TooManyQueues(ZoldyQError):
    code = "too_many_queues"
    http_status = 507

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit

    def __str__(self) -> str:
        return f"the namespace already holds its maximum of {self.limit} queues"

    def fields(self) -> dict[str, object]:
        return {"max_queues": self.limit}


class StorageExhausted(ZoldyQError):
    code = "storage_exhausted"
    http_status = 507

    def __init__(self, needed: int, free: int, where: str = "/dev/shm") -> None:
        super().__init__(needed, free, where)
        self.needed = needed
        self.free = free
        self.where = where

    def __str__(self) -> str:
        return (
            f"{self.where} has {self.free} bytes free, {self.needed} bytes are needed "
            "(enlarge it, e.g. docker run --shm-size, or lower the queue's max_bytes)"
        )


class ClosedError(ZoldyQError):
    """The caller closed the handle or interrupted waits: an orderly end."""

    code = "closed"
    http_status = 503

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what

    def __str__(self) -> str:
        return f"{self.what} is closed"


class QueueDeleted(ClosedError):
    """The queue was deleted (by anyone) while this handle pointed at it."""

    code = "queue_not_found"
    http_status = 404

    def __init__(self, queue_name: str) -> None:
        super().__init__(queue_name)
        self.queue_name = queue_name

    def __str__(self) -> str:
        return f"Queue '{self.queue_name}' was deleted"


class BrokenError(ZoldyQError):
    """Shared state is missing or unusable: not the caller's doing."""

    code = "namespace_broken"
    http_status = 503


class NamespaceNotFound(BrokenError, FileNotFoundError):
    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.namespace = namespace

    def __str__(self) -> str:
        return f"namespace '{self.namespace}' does not exist on this host (create it first)"


class AccessDenied(BrokenError, PermissionError):
    """The namespace belongs to another user, or one of its objects is not private.

    With ``path``: an object we could open but refuse to trust (another
    owner, or group/other permission bits), which another user could read,
    forge or truncate.
    """

    def __init__(
        self, namespace: str, path: str | None = None, owner: str = "", mode: int = 0
    ) -> None:
        super().__init__(namespace, path, owner, mode)
        self.namespace, self.path, self.owner, self.mode = namespace, path, owner, mode

    def __str__(self) -> str:
        if self.path is None:
            return (
                f"namespace '{self.namespace}' belongs to another user (its objects are mode "
                "0600): run as the user who created it"
            )
        return (
            f"namespace '{self.namespace}' is not safe to use: {self.path} is owned by "
            f"{self.owner} with mode {self.mode:04o} (ZoldyQ needs its own user and mode "
            "0600): remove the namespace's objects or run as their owner"
        )


class NamespaceBusy(ZoldyQError):
    """Another live server owns the namespace (see ``zoldyq.shm.owner``)."""

    code = "namespace_busy"
    http_status = 409

    def __init__(self, namespace: str, pid: int | None) -> None:
        super().__init__(namespace, pid)
        self.namespace, self.pid = namespace, pid

    def __str__(self) -> str:
        pid = "" if self.pid is None or self.pid < 0 else f" (pid {self.pid})"
        return (
            f"namespace '{self.namespace}' is served by another zoldyq server{pid}: "
            "stop it first, or serve another namespace (--namespace)"
        )


class LayoutMismatch(BrokenError):
    def __init__(self, namespace: str, found: int, expected: int) -> None:
        super().__init__(namespace, found, expected)
        self.namespace = namespace
        self.found = found
        self.expected = expected

    def __str__(self) -> str:
        return (
            f"namespace '{self.namespace}' has layout version {self.found}, this ZoldyQ "
            f"speaks version {self.expected} (destroy it or run the matching version)"
        )


class LeaseExpired(ZoldyQError, LookupError):
    """The lease is not held (any more): it expired, was acked or nacked, or never was."""

    code = "lease_expired"
    http_status = 409

    def __init__(self, queue_name: str, lease_id: str) -> None:
        super().__init__(queue_name, lease_id)
        self.queue_name = queue_name
        self.lease_id = lease_id

    def __str__(self) -> str:
        shown = self.lease_id if len(self.lease_id) <= 80 else self.lease_id[:77] + "..."
        return (
            f"lease '{shown}' on queue '{self.queue_name}' is not held "
            "(expired, settled or unknown)"
        )

    def fields(self) -> dict[str, object]:
        return {"queue_name": self.queue_name, "lease_id": self.lease_id}


class QueueBusy(ZoldyQError):
    """Another process holds the queue's lock too long: try again after ``retry_after`` s."""

    code = "queue_busy"
    http_status = 503

    def __init__(self, queue_name: str, retry_after: float = 1.0) -> None:
        super().__init__(queue_name, retry_after)
        self.queue_name = queue_name
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"Queue '{self.queue_name}' is busy (its lock is held by another process): retry"

    def fields(self) -> dict[str, object]:
        return {"queue_name": self.queue_name, "retry_after": self.retry_after}


class BackendUnavailable(BrokenError):
    """The storage engine (e.g. a Redis server) cannot be reached right now."""

    code = "backend_unavailable"

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(backend, reason)
        self.backend = backend
        self.reason = reason

    def __str__(self) -> str:
        return f"backend {self.backend} is unavailable: {self.reason}"


# -- transports and operations ------------------------------------------------


#: Every code a ``RequestError`` is raised with, and its status: the OpenAPI document
#: reads this table, and a test holds each ``RequestError(...)`` in the code to it.
REQUEST_ERRORS: dict[str, int] = {
    "bad_json": 400,
    "missing_payload": 400,
    "missing_payloads": 400,
    "bad_payloads": 400,
    "batch_too_large": 400,
    "bad_timeout": 400,
    "bad_max": 400,
    "bad_lease": 400,
    "bad_delay": 400,
    "missing_lease_id": 400,
    "bad_caps": 400,
    "bad_snapshot_request": 400,
    "incomplete_body": 400,
    "unauthorized": 401,
    "forbidden_origin": 403,
    "ui_read_only": 403,
    "ui_off": 404,
    "ui_file_not_found": 404,
    "body_too_large": 413,
}


def error_statuses() -> dict[str, int]:
    """code -> HTTP status of every error class and every request error code."""
    out = dict(REQUEST_ERRORS)
    todo: list[type[ZoldyQError]] = [ZoldyQError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if isinstance(cls.__dict__.get("code"), str):
            out.setdefault(cls.code, cls.http_status)
    return out


class RequestError(ZoldyQError):
    """The request itself is wrong: bad parameter, body, method or credentials."""

    def __init__(self, status: int, code: str, message: str, **fields: object) -> None:
        super().__init__(status, code, message)
        self.http_status = status
        self.code = code
        self.message = message
        self._fields = fields

    def __str__(self) -> str:
        return self.message

    def fields(self) -> dict[str, object]:
        return self._fields


class BadPath(ZoldyQError):
    """The request path is not ``/queues/{name}/enqueue`` or ``/queues/{name}/dequeue``."""

    code = "bad_path"
    http_status = 404

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

    def __str__(self) -> str:
        shown = self.path if len(self.path) <= 40 else self.path[:37] + "..."
        return f"no stream at {shown!r}: use /queues/<name>/enqueue or /queues/<name>/dequeue"


class BadFrame(ZoldyQError, ValueError):
    """A client frame that is not ``{"payload": ...}``: answered, the stream goes on."""

    code = "bad_request"
    http_status = 400

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class SnapshotError(ZoldyQError):
    """A snapshot file that cannot be loaded: corrupt, truncated, another version."""

    code = "bad_snapshot"
    http_status = 422

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(name, problem)
        self.name = name
        self.problem = problem

    def __str__(self) -> str:
        return f"snapshot '{self.name}' was not loaded: {self.problem}"

    def fields(self) -> dict[str, object]:
        return {"snapshot": self.name}


class SnapshotConflict(ZoldyQError):
    """The snapshot is sound but the namespace has no room for it now."""

    code = "snapshot_conflict"
    http_status = 409

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"snapshot not loaded, nothing changed: {self.message}"


class SnapshotNotFound(ZoldyQError, FileNotFoundError):
    code = "snapshot_not_found"
    http_status = 404

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name

    def __str__(self) -> str:
        return f"snapshot '{self.name}' does not exist"


class SnapshotsDisabled(ZoldyQError):
    code = "snapshots_disabled"
    http_status = 404

    def __str__(self) -> str:
        return "snapshots are disabled: set snapshot_dir (ZOLDYQ_SNAPSHOT_DIR, --snapshot-dir)"


class BadSnapshotName(InvalidName):
    def __str__(self) -> str:
        shown = repr(self.name)[:80]
        return (
            f"invalid snapshot name {shown}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "not starting with '.' (a name, not a path)"
        )
