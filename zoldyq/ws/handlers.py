"""The two streams of the sidecar: enqueue (frames in, answers out) and dequeue.

Dequeue backpressure: a message leaves the ring only when its connection can
take it. Before each take the stream looks at the transport's write buffer
and takes only as many messages as fit under its high-water mark (at least
one); every message taken is written to the transport at once, before the
next ``await``. ``send`` waits while the buffer is above the mark, so a
consumer that stops reading stops the taking: the rest stays in the queue
(and in ``queue_size``), and at most a write buffer's worth is in flight.
Closing a consumer that stays stuck is the server watchdog's job.

Waiting never blocks the loop and parks no thread per connection:
``Queue.aget_many`` shares one waiter thread per queue among all coroutines.
A connection that drops while its stream waits is cancelled at that await,
where nothing has been taken yet, so a dead consumer takes nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.protocol import State

from zoldyq.api import KIND_BYTES, Broker, CheckedRecords, Message, Queue
from zoldyq.broker import LockBusy, from_loop
from zoldyq.errors import (
    BadFrame,
    BrokenError,
    ClosedError,
    LeaseExpired,
    NamespaceNotFound,
    QueueBusy,
    QueueNotFound,
    ZoldyQError,
)
from zoldyq.ws import frames
from zoldyq.ws.checks import parse_path

log = logging.getLogger("zoldyq.ws")

MAX_BATCH = 512  # messages taken in one lock round trip at most
KERNEL_SEND_BUFFER = 64 << 10  # per dequeue stream (the kernel doubles it)
MAX_PIPELINE = 1024  # received frames not yet enqueued, per connection, at most
IDLE_WAIT = 5.0  # an empty stream re-checks for shutdown at least this often
MISSING_QUEUE_POLL = 0.2  # a stream on a queue that does not exist yet looks again
BUSY_POLL = 0.1  # a stream on a queue whose lock another process holds looks again
SHUTDOWN_REASON = "going_away: the server is shutting down"
DEFAULT_PREFETCH = 10  # unacked leased messages in flight per connection, by default


async def handle(ws: ServerConnection, broker: Broker) -> None:
    """Route one connection by path; close it with 1008/1011 and a reason on failure."""
    try:
        name, op = parse_path(ws.request.path if ws.request else "")
    except ZoldyQError as ex:  # BadPath, InvalidName
        await ws.close(CloseCode.POLICY_VIOLATION, frames.close_reason(ex.code, str(ex)))
        return
    queue = broker.queue(name)
    try:
        if op == "enqueue":
            await enqueue(ws, queue)
        else:
            try:
                lease, prefetch = lease_params(ws.request.path if ws.request else "")
            except BadFrame as ex:
                await ws.close(CloseCode.POLICY_VIOLATION, frames.close_reason(ex.code, str(ex)))
                return
            if lease is None:
                await Dequeue(ws, queue).run()
            else:
                await LeasedDequeue(ws, queue, lease, prefetch).run()
    except ConnectionClosed:
        pass
    except ClosedError:  # the broker closed under us: shutdown
        await ws.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
    except BrokenError as ex:
        log.error("stream on queue %r: %s", name, ex)
        await ws.close(CloseCode.INTERNAL_ERROR, frames.close_reason(ex.code, str(ex)))
    except Exception:
        log.exception("stream on queue %r failed", name)
        await ws.close(CloseCode.INTERNAL_ERROR, "internal_error: see the sidecar log")
    finally:
        log.info("%s stream on %r from %s ended", op, name, _peer(ws))


def lease_params(target: str) -> tuple[float | None, int]:
    """``?lease=S&prefetch=N`` of a dequeue stream: (None, 0) for a plain stream."""
    query = parse_qs(urlsplit(target).query)
    if "lease" not in query:
        return None, 0
    try:
        lease = frames.seconds(float(query["lease"][-1]), "lease", positive=True)
        prefetch = int(query.get("prefetch", [str(DEFAULT_PREFETCH)])[-1])
    except ValueError:
        raise BadFrame("lease must be seconds, prefetch an integer") from None
    if not 1 <= prefetch <= MAX_BATCH:
        raise BadFrame(f"prefetch must be 1..{MAX_BATCH}")
    return lease, prefetch


def _peer(ws: ServerConnection) -> str:
    try:
        host, port = ws.remote_address[:2]
    except (TypeError, ValueError):
        return "?"
    return f"{host}:{port}"


async def send_frames(ws: ServerConnection, out: list[bytes],
                      binary: bool | list[bool] = False) -> None:
    """Send frames with one transport write, then wait like ``send`` does.

    ``binary``: all frames binary, all text, or one flag per frame. ``ws.send``
    costs a protocol call and a socket write per frame; here the frames are
    built at once (``frames.wire``, or the sans-I/O protocol when an extension
    such as compression is on) and written together. When they do not fit
    under the transport's high-water mark, the last one goes through
    ``ws.send``, which waits until the buffer drains. Either way every frame
    is in the transport before the first ``await``.
    """
    protocol, transport = ws.protocol, ws.transport
    last_binary = binary[-1] if isinstance(binary, list) else binary
    if protocol.state is not State.OPEN:
        await ws.send(out[-1], text=not last_binary)  # raises ConnectionClosed
        return
    head, last = out[:-1], out[-1:]
    if protocol.extensions:
        for i, data in enumerate(head):
            if binary if isinstance(binary, bool) else binary[i]:
                protocol.send_binary(data)
            else:
                protocol.send_text(data)
        pending = protocol.data_to_send()
    else:
        pending = protocol.data_to_send()  # whatever the protocol queued (a pong) goes first
        pending.append(frames.wire(out, binary))
        high = transport.get_write_buffer_limits()[1]
        if transport.get_write_buffer_size() + sum(map(len, pending)) <= high:
            last = []  # all of it fits: no need to wait for a drain
        else:
            pending[-1] = frames.wire(head, binary[:-1] if isinstance(binary, list) else binary)
    transport.write(b"".join(pending))
    if last:
        await ws.send(last[0], text=not last_binary)


async def enqueue(ws: ServerConnection, queue: Queue) -> None:
    """Enqueue each frame and answer it, in order; bad frames get an error frame.

    A reader task moves received frames to ``pending``; this loop takes
    whatever has piled up, enqueues runs of valid frames with one
    ``put_records`` each, and sends the answers together. A pipelining client
    thus costs one lock round trip per batch, not per frame.
    """
    broker = queue.broker
    limit = broker.defaults.max_message_bytes
    for entry in broker.entries():
        if entry.name == queue.name:
            limit = entry.caps.max_message_bytes
    ws.protocol.max_message_size = limit + frames.ENVELOPE_BYTES
    pending: list[str | bytes] = []
    arrived = asyncio.Event()
    room = asyncio.Event()
    room.set()

    async def read() -> None:
        try:
            async for frame in ws:
                pending.append(frame)
                arrived.set()
                if len(pending) >= MAX_PIPELINE:
                    room.clear()
                    await room.wait()
        finally:
            arrived.set()

    reader = asyncio.create_task(read())
    batcher = Batcher(queue)
    try:
        while True:
            await arrived.wait()
            if not pending:
                break  # the reader ended
            batch = pending[:]
            pending.clear()
            arrived.clear()
            room.set()
            await send_frames(ws, await batcher.apply(batch))
        reader.result()  # re-raise what ended the reader, if anything but a close
    finally:
        reader.cancel()


class Batcher:
    """Turns a batch of client frames into queue puts and one answer per frame."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue
        self.prefix = frames.ack_prefix(queue.name)

    async def apply(self, batch: list[str | bytes]) -> list[bytes]:
        out: list[bytes] = [b""] * len(batch)
        run: list[tuple[int, tuple[int, bytes]]] = []
        parse = frames.parse_frame
        now = time.time_ns() // 1000
        for i, frame in enumerate(batch):
            try:
                record, at = parse(frame, now)
            except BadFrame as ex:
                await self._put(run, out)
                run = []
                out[i] = frames.error(ex)
                continue
            if at is None:
                run.append((i, record))
                continue
            await self._put(run, out)  # a delayed frame goes alone, in order
            run = []
            try:
                r = await from_loop(self.queue.name, functools.partial(
                    self.queue.put_records, CheckedRecords([record]), deliver_at=at))
            except (BrokenError, ClosedError):
                raise
            except ZoldyQError as ex:
                out[i] = frames.error(ex)
                continue
            out[i] = frames.ack(self.prefix, r.queue_size, r.enqueued_at)[:-1] + \
                b',"deliver_at":%d}' % at
        await self._put(run, out)
        return out

    async def _put(self, run: list[tuple[int, tuple[int, bytes]]], out: list[bytes]) -> None:
        """Enqueue a run of records all at once; if that fails, one by one for exact answers."""
        if not run:
            return
        try:
            size, at = (await from_loop(self.queue.name, self.queue.put_records,
                                        CheckedRecords([rec for _, rec in run])))[:2]
        except (BrokenError, ClosedError):
            raise
        except ZoldyQError as ex:
            if len(run) > 1:
                for item in run:
                    await self._put([item], out)
            else:
                out[run[0][0]] = frames.error(ex)
            return
        ack, prefix, last = frames.ack, self.prefix, len(run) - 1
        for j, (i, _) in enumerate(run):
            out[i] = ack(prefix, size - last + j, at)


class Dequeue:
    """One streaming consumer: take what the connection can send, send it, repeat.

    The loop (``_stream``) is shared with ``LeasedDequeue``, which changes three
    policies: how many to take (``_want``), how to frame them (``_frames``) and
    what to do with messages taken for a peer that has just gone (``_orphaned``).
    """

    lease: float | None = None  # plain: messages leave the queue when taken

    def __init__(self, ws: ServerConnection, queue: Queue) -> None:
        self.ws = ws
        self.queue = queue
        self.waiting = False  # parked where a cancel takes nothing
        self.task: asyncio.Task[None] | None = None
        self.frame_size = 256  # running estimate, to turn free buffer bytes into a count
        self.prefix = frames.message_prefix(queue.name)

    async def run(self) -> None:
        self.task = asyncio.current_task()
        sock = self.ws.transport.get_extra_info("socket")
        if sock is not None:  # a fixed kernel buffer: autotuning would grow it to MBs
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_SEND_BUFFER)
        self.ws.protocol.max_message_size = 4096  # clients have nothing to say here
        reader = asyncio.create_task(self._read())
        try:
            await self._stream()
        except asyncio.CancelledError:
            if not reader.done():
                raise  # not ours: the server is cancelling us
            self.task.uncancel()  # type: ignore[union-attr]
        finally:
            reader.cancel()

    async def _read(self) -> None:
        """Consume what the client sends (pongs must get through); stop the stream on close."""
        try:
            async for _ in self.ws:
                pass
        except ConnectionClosed:
            pass
        self._stop_waiting()

    def _stop_waiting(self) -> None:
        if self.waiting and self.task is not None:
            self.task.cancel()

    async def _want(self) -> int:
        """As many as fit under the transport's high-water mark, at least one."""
        transport = self.ws.transport
        room = transport.get_write_buffer_limits()[1] - transport.get_write_buffer_size()
        return min(MAX_BATCH, max(1, room // self.frame_size))

    async def _take(self, want: int) -> Sequence[Message]:
        """Up to ``want`` messages, waiting for the first; none once the connection is gone."""
        if self.ws.state is not State.OPEN:
            return []
        try:
            msgs = self.queue.get_many(want, 0, self.lease)  # the loop never waits for a lock
            if msgs:
                return msgs
            self.waiting = True  # from here to the await, nothing can close us unnoticed
            return await self.queue.aget_many(want, IDLE_WAIT, self.lease)
        except LockBusy:  # held by a stopped process: look again soon
            self.waiting = True
            await asyncio.sleep(BUSY_POLL)
            return []
        finally:
            self.waiting = False

    def _frames(self, msgs: Sequence[Message]) -> tuple[list[bytes], bool | list[bool]]:
        """The frames for ``msgs``; raw messages go out as binary frames."""
        (before, middle), encode = self.prefix, frames.message
        out = [m.data if m.kind == KIND_BYTES else encode(before, middle, m.data, m.enqueued_at)
               for m in msgs]
        # + enqueued_at and the frame header
        overhead = len(before) + len(middle) + 24
        self.frame_size = sum(len(m.data) for m in msgs) // len(msgs) + overhead
        if any(m.kind == KIND_BYTES for m in msgs):
            return out, [m.kind == KIND_BYTES for m in msgs]
        return out, False

    async def _orphaned(self, msgs: Sequence[Message]) -> None:
        """Taken, but nobody to write them to: back at the head of the queue."""
        await settle(self.queue.name, self.queue.requeue, msgs)

    async def _wait_for_queue(self) -> None:
        """The queue does not exist (yet): look again soon, unless the namespace is gone."""
        broker = self.queue.broker
        if broker.destroyed:
            raise NamespaceNotFound(broker.namespace)
        self.waiting = True
        try:
            await asyncio.sleep(MISSING_QUEUE_POLL)
        finally:
            self.waiting = False

    async def _stream(self) -> None:
        ws, broker = self.ws, self.queue.broker
        while True:
            try:
                msgs = await self._take(await self._want())
            except QueueNotFound:
                await self._wait_for_queue()
                continue
            if not msgs:
                if ws.state is not State.OPEN:
                    return
                if broker.interrupted:
                    await ws.close(CloseCode.GOING_AWAY, SHUTDOWN_REASON)
                    return
                continue
            if ws.protocol.state is not State.OPEN:
                await self._orphaned(msgs)
                return
            await send_frames(ws, *self._frames(msgs))


async def settle(name: str, fn: Any, *args: Any) -> Any:
    """A call that must happen even if a stopped process holds the lock: it then
    finishes in a thread (the caller may get QueueBusy meanwhile, but it is done)."""
    return await from_loop(name, fn, *args, patient=True)


class LeasedDequeue(Dequeue):
    """A consumer with leases and credit: at most ``prefetch`` unacked messages in flight.

    The client settles each message with an ack, nack or extend frame; a lease
    that expires also frees its credit. When the connection closes, every
    lease it still holds is given back at once (nack), not at expiry.
    """

    def __init__(self, ws: ServerConnection, queue: Queue, lease: float, prefetch: int) -> None:
        super().__init__(ws, queue)
        self.lease, self.prefetch = lease, prefetch
        self.held: dict[str, int] = {}  # lease id -> lease_expires_at µs
        self.credit = asyncio.Event()
        self.credit.set()

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            held, self.held = list(self.held), {}
            for lease_id in held:  # the connection is gone: back at the head now
                with contextlib.suppress(LeaseExpired, ZoldyQError):
                    await settle(self.queue.name, self.queue.nack, lease_id)

    async def _read(self) -> None:
        """Settle leases as the client's frames say; stop the stream on close."""
        self.ws.protocol.max_message_size = 1024
        try:
            async for frame in self.ws:
                answer = await self._settle(frame)
                if answer:
                    await self.ws.send(answer.decode())
        except ConnectionClosed:
            pass
        self._stop_waiting()

    async def _settle(self, frame: str | bytes) -> bytes | None:
        q = self.queue
        try:
            op, lease_id, seconds = frames.parse_control(frame)
            if op == "extend":
                at = await from_loop(q.name, q.extend, lease_id, seconds)
                if lease_id in self.held:
                    self.held[lease_id] = at
                return b'{"extended":"%s","lease_expires_at":%d}' % (lease_id.encode(), at)
            self.held.pop(lease_id, None)
            self.credit.set()
            if op == "ack":
                await from_loop(q.name, q.ack, lease_id)
            else:
                await from_loop(q.name, q.nack, lease_id, seconds)
        except (BadFrame, LeaseExpired, QueueBusy) as ex:
            return frames.error(ex)
        return None

    def _room(self) -> int:
        """Credit left, after forgetting leases that expired (their messages went back)."""
        now = time.time_ns() // 1000
        for lease_id in [i for i, at in self.held.items() if at <= now]:
            del self.held[lease_id]
        return self.prefetch - len(self.held)

    async def _want(self) -> int:
        """The credit left, waiting for some (an ack or a lease expiring); 0 if the peer left."""
        while (room := self._room()) <= 0:
            if self.ws.state is not State.OPEN:
                return 0
            self.credit.clear()
            soonest = min(self.held.values(), default=0)
            wait = max(0.001, (soonest - time.time_ns() // 1000) / 1e6)
            self.waiting = True
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.credit.wait(), min(wait, IDLE_WAIT))
            finally:
                self.waiting = False
        return room

    async def _take(self, want: int) -> Sequence[Message]:
        msgs = await super()._take(want) if want else []
        for m in msgs:
            if m.lease_id is not None:
                self.held[m.lease_id] = m.lease_expires_at or 0
        return msgs

    def _frames(self, msgs: Sequence[Message]) -> tuple[list[bytes], bool | list[bool]]:
        return [frames.leased_message(self.queue.name, m) for m in msgs], False

    async def _orphaned(self, msgs: Sequence[Message]) -> None:
        """Nothing to do here: ``run`` gives every held lease back."""
