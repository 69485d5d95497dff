"""The client commands of ``zoldyq``: put, get, peek, stream, queues, stats, clear, delete,
snapshot, bench.

Each works on the local shared memory (``--local``; the default when the
namespace exists on this host) or on a server (``--url``, ``--token``).
Output is for people by default and JSON with ``--json``.

Exit codes: 0 done, 1 the operation failed (the message says why), 2 bad
usage or configuration, 3 nothing to get, 4 cannot reach the server or
namespace, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from zoldyq import settings as settings_mod
from zoldyq.cli import bench
from zoldyq.cli.target import Target, open_target
from zoldyq.cli.term import CLEAR, table
from zoldyq.errors import BrokenError, ConfigError, ZoldyQError

OK, FAILED, USAGE, EMPTY, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 4, 130
NAMES = ("put", "get", "peek", "ack", "nack", "redrive", "stream", "queues", "stats", "clear",
         "delete", "snapshot", "bench")
PUT_CHUNK = 1000  # messages per batch when putting --lines


def add_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the client commands to ``zoldyq``'s subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("where")
    where.add_argument("--url", default=os.environ.get("ZOLDYQ_URL"),
                       help="where the queues are: http(s)://host:port, shm://NAMESPACE, "
                            "redis://host:port [ZOLDYQ_URL]")
    where.add_argument("--local", action="store_true", default=None,
                       help="use this host's shared memory (default when the namespace exists)")
    settings_mod.add_arguments(
        where, only=("namespace", "token", "token_file", "backend", "redis_password_file"),  # type: ignore[arg-type]
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])  # type: ignore[no-any-return]

    p = cmd("put", "enqueue one message (or one per line of stdin with --lines)")
    p.add_argument("queue")
    p.add_argument("payload", nargs="?", help="JSON text; '-' or absent: read stdin")
    p.add_argument("--raw", action="store_true", help="send the bytes as-is, not JSON")
    p.add_argument("--lines", action="store_true", help="stdin holds one JSON value per line")
    p.add_argument("--delay", type=float, help="seconds before the message becomes visible")

    p = cmd("get", "dequeue messages")
    p.add_argument("queue")
    p.add_argument("--timeout", type=float, default=0.0, help="seconds to wait (default 0)")
    p.add_argument("--max", type=int, default=1, help="messages at most (default 1)")
    p.add_argument("--lease", type=float,
                   help="lease for this many seconds (prints each lease id; ack or nack it)")

    p = cmd("ack", "acknowledge leased messages: they are gone for good")
    p.add_argument("queue")
    p.add_argument("lease_id", nargs="+")

    p = cmd("nack", "give a leased message back at the head (or after --delay)")
    p.add_argument("queue")
    p.add_argument("lease_id")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before it is visible again")

    p = cmd("redrive", "move a dead-letter queue's messages back to their queues")
    p.add_argument("queue", help="the dead-letter queue")

    p = cmd("peek", "print the first messages of a queue without taking them")
    p.add_argument("queue")
    p.add_argument("--max", type=int, default=10, help="messages at most (default 10)")

    p = cmd("stream", "print messages as they arrive, until Ctrl-C")
    p.add_argument("queue")
    p.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    p.add_argument("--idle", type=float, default=0.0,
                   help="stop after this many seconds without a message (0: never)")

    cmd("queues", "list the queues")

    p = cmd("stats", "live table of the queues, refreshed like top")
    p.add_argument("queue", nargs="*", help="only these queues")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    p.add_argument("--iterations", type=int, default=0,
                   help="refresh this many times (0: until Ctrl-C on a terminal, else once)")

    p = cmd("clear", "drop every message of a queue")
    p.add_argument("queue")

    p = cmd("delete", "delete a queue and its messages")
    p.add_argument("queue")

    p = cmd("snapshot", "save or load queues to/from the snapshot directory")
    p.add_argument("action", choices=("save", "load"))
    p.add_argument("name", help="snapshot name (a file <name>.zqsnap in the snapshot dir)")
    p.add_argument("--queue", help="only this queue")
    settings_mod.add_arguments(p, only=("snapshot_dir",))

    p = cmd("bench", "enqueue then dequeue N messages, timing each call")
    p.add_argument("--messages", "-n", type=int, default=10_000)
    p.add_argument("--size", type=int, default=100, help="payload bytes (default 100)")
    p.add_argument("--batch", type=int, default=1, help="messages per call (default 1)")
    p.add_argument("--queue", help="queue to use (default: a fresh one, deleted afterwards)")
    p.add_argument("--keep", action="store_true", help="do not delete the bench queue")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, also taking ``put q --raw PAYLOAD``.

    argparse (before 3.12) fills an optional positional before it sees later
    flags, so the payload after ``--raw`` would be refused as unrecognised.
    """
    args, extra = parser.parse_known_args(argv)
    if extra and getattr(args, "payload", 0) is None and len(extra) == 1:
        args.payload = extra[0]
    elif extra:
        parser.error("unrecognized arguments: " + " ".join(extra))
    return args


def run(args: argparse.Namespace) -> int:
    """Run one client command; returns the exit code."""
    try:
        settings = settings_mod.from_args(args)
    except ConfigError as ex:
        return _fail(USAGE, ex)
    scheme = "https" if settings.tls_cert else "http"
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    try:
        url = args.url or (settings.backend if settings.backend != "shm" else None)  # Redis
        client = open_target(
            settings.namespace, url, settings.token, args.local, settings.snapshot_dir,
            default_url=f"{scheme}://{host}:{settings.port}",
            namespace_asked=args.namespace is not None or "ZOLDYQ_NAMESPACE" in os.environ,
            redis_password_file=settings.redis_password_file,
        )
    except ConfigError as ex:  # a bad URL
        return _fail(USAGE, ex)
    except ZoldyQError as ex:
        return _fail(UNREACHABLE, ex)
    try:
        return _COMMANDS[args.command](client, args)
    except KeyboardInterrupt:
        return INTERRUPTED
    except BrokenError as ex:
        return _fail(UNREACHABLE, ex)
    except (ZoldyQError, ValueError) as ex:
        return _fail(FAILED, ex)
    finally:
        client.close()


def _fail(code: int, ex: BaseException) -> int:
    print(f"zoldyq: {ex}", file=sys.stderr)
    return code


def _out(args: argparse.Namespace, doc: Any, human: str) -> None:
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    else:
        print(human)
    sys.stdout.flush()


# -- commands ------------------------------------------------------------------------


def _put(client: Target, args: argparse.Namespace) -> int:
    if args.lines:
        total, receipt = 0, {}
        for chunk in _chunks(_json_lines(sys.stdin.buffer), PUT_CHUNK):
            receipt = client.put_many(args.queue, chunk, args.delay)
            total += len(chunk)
        _out(args, {**receipt, "count": total}, f"queued {total} messages in '{args.queue}'")
        return OK
    data = _input(args.payload)
    if args.raw:
        receipt = client.put_raw(args.queue, data, args.delay)
    else:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise ValueError(
                "the payload is not JSON (quote a string: '\"text\"', or send bytes with --raw)"
            ) from None
        receipt = client.put(args.queue, payload, args.delay)
    later = " (delayed)" if receipt.get("deliver_at") else ""
    _out(args, receipt, f"queued in '{args.queue}' (size {receipt.get('queue_size')}){later}")
    return OK


def _input(arg: str | None) -> bytes:
    if arg is None or arg == "-":
        return sys.stdin.buffer.read()
    return arg.encode()


def _json_lines(stream: Any) -> Iterator[Any]:
    for number, line in enumerate(stream, 1):
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise ValueError(f"line {number} of stdin is not JSON") from None


def _chunks(items: Iterator[Any], n: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _print_message(args: argparse.Namespace, m: dict[str, Any]) -> None:
    if args.json:
        doc = dict(m)
        if m["raw"]:
            doc["payload_base64"] = base64.b64encode(doc.pop("payload")).decode()
        sys.stdout.buffer.write(orjson.dumps(doc) + b"\n")
    else:
        lease = f"{m['lease_id']}\t".encode() if m.get("lease_id") else b""
        body = m["payload"] if m["raw"] else orjson.dumps(m["payload"])
        sys.stdout.buffer.write(lease + body + b"\n")
    sys.stdout.flush()


def _get(client: Target, args: argparse.Namespace) -> int:
    if args.max < 1:
        raise ValueError("--max must be at least 1")
    messages = client.get(args.queue, args.timeout, args.max, args.lease)
    for m in messages:
        _print_message(args, m)
    if not messages:
        if not args.json:
            print(f"zoldyq: queue '{args.queue}' is empty", file=sys.stderr)
        return EMPTY
    return OK


def _ack(client: Target, args: argparse.Namespace) -> int:
    not_held = client.ack(args.queue, args.lease_id)
    acked = len(args.lease_id) - len(not_held)
    _out(args, {"acked": acked, "not_held": not_held, "queue_name": args.queue},
         f"acked {acked} in '{args.queue}'" + (f"; not held: {' '.join(not_held)}"
                                               if not_held else ""))
    return FAILED if not_held else OK


def _nack(client: Target, args: argparse.Namespace) -> int:
    dlq = client.nack(args.queue, args.lease_id, args.delay)
    doc: dict[str, Any] = {"nacked": 1, "queue_name": args.queue}
    if dlq:
        doc.update(dead_lettered=True, dead_letter_queue=dlq)
    _out(args, doc, f"moved to dead-letter queue '{dlq}'" if dlq else
         f"given back to '{args.queue}'")
    return OK


def _redrive(client: Target, args: argparse.Namespace) -> int:
    n = client.redrive(args.queue)
    _out(args, {"redriven": n, "queue_name": args.queue},
         f"moved {n} messages from '{args.queue}' back to their queues")
    return OK


def _peek(client: Target, args: argparse.Namespace) -> int:
    if args.max < 1:
        raise ValueError("--max must be at least 1")
    messages = client.peek(args.queue, args.max)
    for m in messages:
        _print_message(args, m)
    if not messages:
        if not args.json:
            print(f"zoldyq: queue '{args.queue}' is empty", file=sys.stderr)
        return EMPTY
    return OK


def _stream(client: Target, args: argparse.Namespace) -> int:
    seen = 0
    idle_since = time.monotonic()
    while not args.count or seen < args.count:
        wait = 1.0
        if args.idle:
            wait = min(wait, idle_since + args.idle - time.monotonic())
            if wait <= 0:
                break
        batch = 100 if not args.count else min(100, args.count - seen)
        got = client.get(args.queue, wait, batch)
        for m in got:
            _print_message(args, m)
        if got:
            seen += len(got)
            idle_since = time.monotonic()
    return OK


def _queues(client: Target, args: argparse.Namespace) -> int:
    rows = client.queues()
    human = table(
        [(r["name"], r["size"], r["capacity"], f"{r['utilization']:.1%}", r["bytes"])
         for r in rows],
        ("QUEUE", "SIZE", "CAPACITY", "USED", "BYTES"),
    ) if rows else "no queues"  # fmt: skip
    _out(args, rows, human)
    return OK


def _stats(client: Target, args: argparse.Namespace) -> int:
    live = sys.stdout.isatty() and not args.json
    frames = args.iterations or (0 if live else 1)
    before: dict[str, dict[str, Any]] = {}
    then = time.monotonic()
    shown = 0
    while True:
        rows = [r for r in client.queues() if not args.queue or r["name"] in args.queue]
        now = time.monotonic()
        for r in rows:
            old = before.get(r["name"])
            span = now - then
            for key, rate in _RATES:
                r[rate] = round((r[key] - old[key]) / span, 1) if old and span > 0 else None
        before, then = {r["name"]: r for r in rows}, now
        if args.json:
            _out(args, {"time": time.time(), "queues": rows}, "")
        else:
            frame = _stats_frame(client, rows)
            print((CLEAR + frame) if live else frame, flush=True)
        shown += 1
        if frames and shown >= frames:
            return OK
        time.sleep(args.interval)


_RATES = (("enqueued_total", "enqueue_rate"), ("dequeued_total", "dequeue_rate"))


def _stats_frame(client: Target, rows: list[dict[str, Any]]) -> str:
    head = f"zoldyq  {client.where}  {time.strftime('%H:%M:%S')}  {len(rows)} queues"
    body = table(
        [(r["name"], r["size"], r["capacity"], f"{r['utilization']:.1%}",
          r["enqueue_rate"], r["dequeue_rate"], r["enqueued_total"], r["dequeued_total"],
          r["queue_full_total"]) for r in rows],
        ("QUEUE", "SIZE", "CAPACITY", "USED", "ENQ/S", "DEQ/S", "ENQUEUED", "DEQUEUED", "FULL"),
    )  # fmt: skip
    return f"{head}\n\n{body}"


def _clear(client: Target, args: argparse.Namespace) -> int:
    n = client.clear(args.queue)
    doc = {"queue_name": args.queue, "cleared": n}
    _out(args, doc, f"cleared {n} messages from '{args.queue}'")
    return OK


def _delete(client: Target, args: argparse.Namespace) -> int:
    client.delete(args.queue)
    _out(args, {"queue_name": args.queue, "deleted": True}, f"deleted queue '{args.queue}'")
    return OK


def _snapshot(client: Target, args: argparse.Namespace) -> int:
    doc = client.snapshot(args.action, args.name, args.queue)
    verb = "saved" if args.action == "save" else "loaded"
    _out(args, doc, f"{verb} {doc['messages']} messages in {doc['queues']} queues "
                    f"({'to' if verb == 'saved' else 'from'} snapshot '{doc['snapshot']}')")
    return OK


def _bench(client: Target, args: argparse.Namespace) -> int:
    if args.messages < 1 or args.batch < 1 or args.size < 0:
        raise ValueError("--messages and --batch must be at least 1, --size at least 0")
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    results = bench.run(client, args.messages, args.size, args.batch, args.queue, args.keep,
                        sys.stderr, progress and not args.json)
    human = f"{client.where}: {args.messages:,} messages of ~{args.size} B, batch {args.batch}\n"
    human += table(
        [(r["phase"], r["messages"], r["seconds"], r["msgs_per_s"], r["p50_us"], r["p99_us"],
          r["max_us"]) for r in results],
        ("PHASE", "MESSAGES", "SECONDS", "MSG/S", "P50 µs", "P99 µs", "MAX µs"),
    )  # fmt: skip
    _out(args, results, human)
    return OK


_COMMANDS: dict[str, Callable[[Target, argparse.Namespace], int]] = {
    "put": _put,
    "get": _get,
    "ack": _ack,
    "nack": _nack,
    "redrive": _redrive,
    "peek": _peek,
    "stream": _stream,
    "queues": _queues,
    "stats": _stats,
    "clear": _clear,
    "delete": _delete,
    "snapshot": _snapshot,
    "bench": _bench,
}
