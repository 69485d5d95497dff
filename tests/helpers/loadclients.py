#!/usr/bin/env python
"""Producers and consumers over HTTP, WebSocket and the local API, for chaos and soak runs.

``python -m tests.helpers.loadclients ROLE DIR TAG QUEUE...`` with the server's
addresses in the environment (``LOAD_HTTP``, ``LOAD_WS``, ``LOAD_NS``). Each
client is its own process, so it can be ``kill -9``'d, and leaves its record in
files under DIR written so that a kill at any moment leaves them readable:

- ``ack-TAG``: one 8-byte record (seq, queue index) appended in one ``write``
  per message a server acknowledged;
- ``got-TAG``: one 16-byte record (tag, seq, queue index, checksum ok) appended
  in one ``write`` per batch a consumer received;
- ``stat-TAG``: ``Stat`` rewritten in place with one ``pwrite`` after each
  operation.

A producer never retries an operation whose answer it did not get (a worker
killed mid-request may have stored it: a retry could duplicate it); it counts
it as unacknowledged and moves on. Every payload carries its own CRC32.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import socket
import struct
import sys
import time
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import zoldyq  # noqa: E402


def attach() -> Any:
    """The load's namespace: on Redis when ``LOAD_BACKEND`` names one, else shared memory."""
    backend = os.environ.get("LOAD_BACKEND")
    if backend:  # imported only then: redis-py takes most of a second to import here
        from zoldyq import redis as zredis

        return zredis.connect(backend, os.environ["LOAD_NS"])
    return zoldyq.attach(os.environ["LOAD_NS"])

ACK = struct.Struct("<II")  # seq, queue index
GOT = struct.Struct("<IIII")  # tag, seq, queue index, checksum ok (1) / corrupt (0)
# ops, longest uninterrupted op (µs), longest recovery after a broken connection (µs),
# messages in doubt (taken by a request whose answer was lost), unexpected answers
STAT = struct.Struct("<QQQQQ")
RAW_HEAD = struct.Struct("<II")
CORRUPT_TAG = 0xFFFFFFFF
HTTP_BATCH = 50  # max per HTTP dequeue: what one lost answer can take with it
LOCAL_BATCH = 20
NET_ERRORS = (OSError, http.client.HTTPException, ValueError)


def pad(tag: int, seq: int) -> str:
    n = (seq * 7919 + tag * 31) % 200
    return (f"{tag}.{seq}-" * (n // 4 + 1))[:n]


def make_json(tag: int, seq: int) -> dict[str, Any]:
    p = pad(tag, seq)
    return {"t": tag, "s": seq, "p": p, "c": zlib.crc32(f"{tag}:{seq}:{p}".encode())}


def make_raw(tag: int, seq: int) -> bytes:
    body = RAW_HEAD.pack(tag, seq) + pad(tag, seq).encode()
    return body + struct.pack("<I", zlib.crc32(body))


def check(payload: Any) -> tuple[int, int, int]:
    """(tag, seq, 1) for an intact payload, (tag, seq, 0) or CORRUPT_TAG for a damaged one."""
    try:
        if isinstance(payload, bytes | bytearray | memoryview):
            payload = bytes(payload)
            body, crc = payload[:-4], struct.unpack("<I", payload[-4:])[0]
            tag, seq = RAW_HEAD.unpack_from(body)
            return tag, seq, int(zlib.crc32(body) == crc and body[8:] == pad(tag, seq).encode())
        tag, seq, p = payload["t"], payload["s"], payload["p"]
        ok = payload["c"] == zlib.crc32(f"{tag}:{seq}:{p}".encode()) and p == pad(tag, seq)
        return tag, seq, int(ok)
    except Exception:  # anything unreadable is corruption, counted
        return CORRUPT_TAG, 0, 0


class Record:
    """The client's files; every write leaves them consistent under kill -9."""

    def __init__(self, directory: str, tag: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self.ack = os.open(f"{directory}/ack-{tag}", flags, 0o600)
        self.got = os.open(f"{directory}/got-{tag}", flags, 0o600)
        self.stat_fd = os.open(f"{directory}/stat-{tag}", os.O_RDWR | os.O_CREAT, 0o600)
        self.ops = self.stall = self.recovery = self.in_doubt = self.unexpected = 0
        self.broken_at: float | None = None  # when the connection broke, until the next success

    def op(self, started: float) -> None:
        """An operation that succeeded: an uninterrupted one counts as a stall candidate."""
        now = time.monotonic()
        self.ops += 1
        if self.broken_at is None:
            self.stall = max(self.stall, int((now - started) * 1e6))
        else:
            self.recovery = max(self.recovery, int((now - self.broken_at) * 1e6))
            self.broken_at = None
        self.save()

    def broke(self, started: float, in_doubt: int = 0) -> None:
        if self.broken_at is None:
            self.broken_at = started
        self.in_doubt += in_doubt
        self.save()

    def save(self) -> None:
        os.pwrite(self.stat_fd, STAT.pack(self.ops, self.stall, self.recovery, self.in_doubt,
                                          self.unexpected), 0)

    def acked(self, seqs: list[int], qi: int) -> None:
        os.write(self.ack, b"".join(ACK.pack(s, qi) for s in seqs))

    def received(self, payloads: list[Any], qi: int) -> None:
        if payloads:
            checked = [check(p) for p in payloads]
            os.write(self.got, b"".join(GOT.pack(t, s, qi, ok) for t, s, ok in checked))


stopping = False


def _stop(signum: int, frame: object) -> None:
    global stopping
    stopping = True


class Pacer:
    """Spread operations evenly at ``rate`` per second (0: as fast as possible)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def wait(self) -> None:
        self.next += self.interval
        delay = self.next - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1:
            self.next = time.monotonic()  # fell far behind: do not burst


# -- producers ----------------------------------------------------------------------------

def local_producer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    broker = attach()
    qs = [broker.queue(n) for n in queues]
    rng, pacer, seq = random.Random(tag), Pacer(rate), 0
    while not stopping:
        pacer.wait()
        qi = rng.randrange(len(qs))
        while not stopping:
            t0 = time.monotonic()
            try:
                if seq % 2:
                    qs[qi].put_bytes(make_raw(tag, seq))
                else:
                    qs[qi].put(make_json(tag, seq))
            except zoldyq.QueueFull:
                time.sleep(0.01)  # not stored: the same message again
                continue
            rec.acked([seq], qi)
            rec.op(t0)
            break
        seq += 1


class Http:
    def __init__(self, url: str) -> None:
        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            r = self.conn.getresponse()
            return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
        except BaseException:
            self.conn.close()
            self.conn = None
            raise


def http_producer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    client, rng, pacer, seq = Http(os.environ["LOAD_HTTP"]), random.Random(tag), Pacer(rate), 0
    while not stopping:
        pacer.wait()
        qi, kind = rng.randrange(len(queues)), seq % 3
        if kind == 2:  # a batch of 5, all or none
            seqs = list(range(seq, seq + 5))
            path = f"/queues/{queues[qi]}/batch"
            body = json.dumps({"payloads": [make_json(tag, s) for s in seqs]}).encode()
            headers = {"Content-Type": "application/json"}
        else:
            seqs = [seq]
            path = f"/queues/{queues[qi]}/enqueue"
            if kind:
                body, headers = make_raw(tag, seq), {"Content-Type": "application/octet-stream"}
            else:
                body = json.dumps({"payload": make_json(tag, seq)}).encode()
                headers = {"Content-Type": "application/json"}
        seq += len(seqs)
        while not stopping:
            t0 = time.monotonic()
            try:
                status, _, _ = client.request("POST", path, body, headers)
            except NET_ERRORS:
                rec.broke(t0)  # maybe stored, never acknowledged: not retried
                break
            if status == 429:
                time.sleep(0.01)  # not stored: the same request again
                continue
            if status == 200:
                rec.acked(seqs, qi)
            else:
                rec.unexpected += 1
            rec.op(t0)
            break


def ws_connect(url: str, rcvbuf: int = 0) -> Any:
    from websockets.sync.client import connect

    host, port = url.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect((host, int(port)))
    # entered by hand: the connection outlives this call (websockets 17 warns otherwise)
    return connect(url, sock=sock, open_timeout=5, close_timeout=1, max_size=None).__enter__()


def ws_producer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    base, rng, pacer, seq = os.environ["LOAD_WS"], random.Random(tag), Pacer(rate), 0
    conns: dict[int, Any] = {}
    while not stopping:
        pacer.wait()
        qi = rng.randrange(len(queues))
        frame: str | bytes = make_raw(tag, seq) if seq % 2 else json.dumps(
            {"payload": make_json(tag, seq)})
        t0 = time.monotonic()
        try:
            if qi not in conns:
                conns[qi] = ws_connect(f"{base}/queues/{queues[qi]}/enqueue")
            conns[qi].send(frame)
            answer = json.loads(conns[qi].recv(timeout=5))
        except Exception:  # any broken connection: sent, maybe stored, not acked
            for c in conns.values():
                c.close_socket()
            conns.clear()
            rec.broke(t0)
            seq += 1
            time.sleep(0.02)  # the sidecar is restarting: do not spin
            continue
        if answer.get("queued"):
            rec.acked([seq], qi)
            rec.op(t0)
            seq += 1
        elif answer.get("error") == "queue_full":
            time.sleep(0.01)  # not stored: the same frame again (seq unchanged)
        else:
            rec.unexpected += 1
            rec.op(t0)
            seq += 1
    for c in conns.values():
        c.close()


# -- consumers ----------------------------------------------------------------------------

def finished(queue: zoldyq.Queue, idle_since: float) -> bool:
    """Told to stop, the queue is empty and nothing came for a while."""
    return stopping and len(queue) == 0 and time.monotonic() - idle_since > 0.5


def local_consumer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    q = attach().queue(queues[0])
    idle_since = time.monotonic()
    while True:
        t0 = time.monotonic()
        msgs = q.get_many(LOCAL_BATCH)
        rec.received([m.payload for m in msgs], 0)
        rec.op(t0)
        if msgs:
            idle_since = time.monotonic()
        elif finished(q, idle_since):
            return
        else:
            time.sleep(0.005)


def http_consumer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    client = Http(os.environ["LOAD_HTTP"])
    local = attach().queue(queues[0])
    path = f"/queues/{queues[0]}/dequeue?max={HTTP_BATCH}"
    idle_since = time.monotonic()
    while True:
        t0 = time.monotonic()
        try:
            status, body, _ = client.request("GET", path)
        except NET_ERRORS:
            rec.broke(t0, HTTP_BATCH)  # the worker may have taken up to a batch with it
            continue
        got: list[Any] = []
        if status == 200:
            for m in json.loads(body)["messages"]:
                got.append(base64.b64decode(m["payload"]) if m.get("encoding") == "base64"
                           else m["payload"])
            rec.received(got, 0)
        elif status not in (204, 404):
            rec.unexpected += 1
        rec.op(t0)
        if got:
            idle_since = time.monotonic()
        elif finished(local, idle_since):
            return
        else:
            time.sleep(0.005)


def ws_consumer(rec: Record, tag: int, queues: list[str], rate: float) -> None:
    """Stream; waiting for frames is intentional, so only reconnections are timed."""
    url = f"{os.environ['LOAD_WS']}/queues/{queues[0]}/dequeue"
    local = attach().queue(queues[0])
    conn, idle_since = None, time.monotonic()
    got: list[Any]
    while True:
        t0, got = time.monotonic(), []
        try:
            if conn is None:
                conn = ws_connect(url, rcvbuf=32 << 10)  # bounds what a sidecar kill can strand
                rec.op(t0)
            while len(got) < 64:
                frame = conn.recv(timeout=0.2 if not got else 0)
                got.append(frame if isinstance(frame, bytes) else json.loads(frame)["payload"])
        except TimeoutError:
            pass
        except Exception:  # the sidecar went away: reconnect
            if conn is not None:
                conn.close_socket()
            conn = None
            rec.broke(t0)
            time.sleep(0.02)
        rec.received(got, 0)
        if got:
            idle_since = time.monotonic()
        elif finished(local, idle_since):
            if conn is not None:
                conn.close()
            return


ROLES = {
    "local-producer": local_producer, "http-producer": http_producer, "ws-producer": ws_producer,
    "local-consumer": local_consumer, "http-consumer": http_consumer, "ws-consumer": ws_consumer,
}


def main() -> None:
    role, directory, tag, rate, *queues = sys.argv[1:]
    signal.signal(signal.SIGTERM, _stop)
    rec = Record(directory, int(tag))
    rec.save()
    ROLES[role](rec, int(tag), queues, float(rate))


if __name__ == "__main__":
    main()
