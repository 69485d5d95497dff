#!/usr/bin/env python
"""Chaos under load: kill -9 server processes and clients while traffic flows, then count.

Usage: .venv/bin/python scripts/chaos [--seconds 60] [--seed 1] [--kill-interval 0.3]
                                         [--workers 3] [--rate 150] [--json FILE]

Runs ``zoldyq serve`` (gunicorn with ``--workers`` asgi workers, and the WebSocket
sidecar) and client processes (``tests/helpers/loadclients.py``): producers over HTTP,
WebSocket and the local API, each putting checksummed JSON and raw messages into
three queues at random; and consumers, one kind per queue (``h`` over HTTP,
``w`` over WebSocket streams, ``l`` over the local API), so whatever goes missing
from a queue can only have been taken by that queue's consumers. Every
``--kill-interval`` (±50 %) it ``kill -9``s one of: a gunicorn worker (the
launcher, gunicorn's master, forks another; one up a second is always left) or a local
client (started again under a new tag), at random; and the sidecar each time it
has been up 5.5 s (the launcher restarts it, but gives up on a child that dies 5
times running within 5 s of starting).

After ``--seconds`` the producers stop, the consumers drain their queues and
exit, and the rest is taken with the local API. The report, and the invariants
that make the exit status non-zero:

- duplicated == 0 and corrupted == 0 (every payload carries a CRC32), reordered == 0
  (each consumer sees each producer's messages to a queue in order);
- lost <= in doubt, per queue: an acknowledged message may be missing only if a
  killed process can have taken it: an HTTP dequeue whose answer never came (up
  to its ``max``), a sidecar killed with frames in flight (bounded by the socket
  buffers), a local consumer killed between taking a batch and recording it;
- longest stall < 1 s: the longest single operation of a client that was not
  killed, excluding operations that a kill interrupted (intentional waits are
  not timed: consumers poll with timeout 0, streams time only reconnections);
- HTTP recovery < 1 s: from a request broken by a worker kill to the next answer;
- no unexpected answer (anything but 200/204/404/429 and their WS equivalents).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import zoldyq  # noqa: E402
from tests.helpers import loadclients as lc  # noqa: E402
from tests.helpers import servers  # noqa: E402

QUEUES = ["h", "w", "l"]  # consumed over HTTP, WebSocket, local API
CONSUMER_QUEUE = {"http-consumer": "h", "ws-consumer": "w", "local-consumer": "l"}
SIDECAR_MIN_AGE = 5.5  # the launcher gives up on a child that dies sooner, 5 times running
WORKER_MIN_AGE = 1.0  # a fresh worker is still importing the app
# What a killed sidecar can strand per stream: its 32 KiB high-water mark, the socket's
# send buffer (64 KiB, doubled by the kernel) and the consumer's receive buffer (32 KiB,
# doubled), in frames of at least 12 bytes (the smallest raw payload)
WS_IN_FLIGHT_BYTES = (32 << 10) + (128 << 10) + (64 << 10)
WS_MIN_FRAME = 12
MIX = {  # role: how many
    "http-producer": 2, "ws-producer": 1, "local-producer": 2,
    "http-consumer": 2, "ws-consumer": 2, "local-consumer": 2,
}


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def server_processes(launcher: int) -> dict[str, list[int]]:
    """The launcher's tree by role: the launcher (gunicorn's master), workers, sidecar."""
    tree: dict[str, list[int]] = {"launcher": [launcher], "worker": [], "sidecar": []}
    for pid in children(launcher):
        if "gunicorn: worker" in cmdline(pid):
            tree["worker"].append(pid)
        elif "workers.ws" in cmdline(pid):
            tree["sidecar"].append(pid)
    return tree


class Client:
    def __init__(self, role: str, tag: int, proc: subprocess.Popen[bytes]) -> None:
        self.role, self.tag, self.proc, self.started = role, tag, proc, time.monotonic()
        self.killed = False


class Run:
    """One server, its clients, and what they recorded."""

    def __init__(self, srv: servers.Server, workdir: Path, rate: float) -> None:
        self.srv, self.workdir, self.rate = srv, workdir, rate
        self.env = {**os.environ, "LOAD_HTTP": srv.url, "LOAD_NS": srv.env["ZOLDYQ_NAMESPACE"],
                    "LOAD_WS": f"ws://127.0.0.1:{srv.ws_port}",
                    "LOAD_BACKEND": srv.env.get("ZOLDYQ_BACKEND", "")}
        self.clients: list[Client] = []
        self.kills: Counter[str] = Counter()
        self.first_seen: dict[int, float] = {}
        self.started = time.monotonic()

    def spawn(self, role: str) -> Client:
        tag = len(self.clients)
        queues = [CONSUMER_QUEUE[role]] if role in CONSUMER_QUEUE else QUEUES
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.loadclients", role, str(self.workdir),
             str(tag), str(self.rate), *queues], env=self.env, cwd=ROOT,
            stdin=subprocess.DEVNULL)
        client = Client(role, tag, proc)
        self.clients.append(client)
        return client

    def start(self, mix: dict[str, int], queue_max_bytes: int | None = None) -> None:
        broker = _attach(self.env["LOAD_NS"], self.env["LOAD_BACKEND"] or None)
        for name in QUEUES:
            broker.create_queue(name, max_bytes=queue_max_bytes, exist_ok=True)
        broker.close()
        for role, n in mix.items():
            for _ in range(n):
                self.spawn(role)

    def live(self, prefix: str = "") -> list[Client]:
        return [c for c in self.clients if c.role.startswith(prefix) and c.proc.poll() is None]

    def aged(self, pids: list[int], age: float) -> list[int]:
        now = time.monotonic()
        for pid in pids:
            self.first_seen.setdefault(pid, now)
        return [p for p in pids if now - self.first_seen[p] >= age]

    def kill_one(self, rng: random.Random) -> str | None:
        """kill -9 one random target that may be killed now; returns what was killed."""
        tree = server_processes(self.srv.pid)
        workers = self.aged(tree["worker"], WORKER_MIN_AGE)
        sidecar = self.aged(tree["sidecar"], SIDECAR_MIN_AGE)
        local = [c for c in self.live("local") if time.monotonic() - c.started > 0.3]
        if sidecar:  # as soon as it may be: the launcher's patience sets the pace
            os.kill(sidecar[0], signal.SIGKILL)
            return "sidecar"
        choices: list[tuple[str, float, Callable[[], None]]] = []
        if len(workers) >= 2:  # always leave one worker that is up
            choices.append(("worker", 0.5, lambda: os.kill(rng.choice(workers), signal.SIGKILL)))
        if local:
            choices.append(("local", 0.5, lambda: self.kill_client(rng.choice(local))))
        if not choices:
            return None
        what, _, kill = rng.choices(choices, weights=[w for _, w, _ in choices])[0]
        kill()
        return what

    def kill_client(self, client: Client) -> None:
        client.proc.send_signal(signal.SIGKILL)
        client.proc.wait(10)
        client.killed = True
        self.kills[client.role] += 1
        self.spawn(client.role)

    def stop(self) -> list[str]:
        """Producers stop, consumers drain and exit; returns problems (a client that hung)."""
        problems = []
        deadline = time.monotonic() + 15
        for c in self.live():  # a SIGTERM before the client set its handler would kill it
            while not (self.workdir / f"stat-{c.tag}").exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        for c in self.live():
            if c.role.endswith("producer"):
                c.proc.send_signal(signal.SIGTERM)
        for c in self.live():
            if c.role.endswith("producer"):
                problems += self._wait(c, 15)
        for c in self.live():
            c.proc.send_signal(signal.SIGTERM)
        for c in self.live():
            problems += self._wait(c, 60)
        return problems

    def _wait(self, c: Client, timeout: float) -> list[str]:
        try:
            code = c.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            c.proc.kill()
            c.proc.wait()
            return [f"{c.role} {c.tag} did not stop in {timeout} s"]
        return [] if code == 0 else [f"{c.role} {c.tag} exited with {code}"]

    def kill_all(self) -> None:
        for c in self.clients:
            if c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()


def read_records(path: Path, size: int) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[:len(data) - len(data) % size]


def analyse(run: Run, leftovers: dict[str, list[Any]], time_limit: float = 1.0
            ) -> dict[str, Any]:
    """Count acknowledged, delivered, lost, duplicated, corrupted; check the invariants."""
    d = run.workdir
    acked: dict[tuple[int, int], str] = {}
    per_protocol_acked: Counter[str] = Counter()
    stats: dict[int, tuple[int, ...]] = {}
    for c in run.clients:
        raw = read_records(d / f"stat-{c.tag}", lc.STAT.size)
        stats[c.tag] = lc.STAT.unpack(raw[:lc.STAT.size]) if raw else (0,) * 5
        for seq, qi in lc.ACK.iter_unpack(read_records(d / f"ack-{c.tag}", lc.ACK.size)):
            acked[(c.tag, seq)] = QUEUES[qi]
            per_protocol_acked[c.role.split("-")[0]] += 1
    delivered: Counter[tuple[int, int]] = Counter()
    corrupted = reordered = 0
    streams: list[list[tuple[int, int, int]]] = []
    for c in run.clients:
        if c.role.endswith("consumer"):
            recs = read_records(d / f"got-{c.tag}", lc.GOT.size)
            streams.append([(t, s, ok) for t, s, _, ok in lc.GOT.iter_unpack(recs)])
    for payloads in leftovers.values():
        streams.append([lc.check(p) for p in payloads])
    for stream in streams:
        last: dict[int, int] = {}
        for tag, seq, ok in stream:
            if not ok:
                corrupted += 1
                continue
            delivered[(tag, seq)] += 1
            if seq <= last.get(tag, -1):
                reordered += 1
            last[tag] = seq
    duplicated = sum(n - 1 for n in delivered.values() if n > 1)
    lost: Counter[str] = Counter(q for key, q in acked.items() if key not in delivered)
    streams_w = sum(1 for c in run.clients if c.role == "ws-consumer")
    in_doubt = {
        "h": sum(stats[c.tag][3] for c in run.clients if c.role == "http-consumer"),
        "w": run.kills["sidecar"] * streams_w * WS_IN_FLIGHT_BYTES // WS_MIN_FRAME,
        "l": run.kills["local-consumer"] * lc.LOCAL_BATCH,
    }
    surviving = [c for c in run.clients if not c.killed]
    stall = max(stats[c.tag][1] for c in surviving) / 1e6
    stall_by_role = {r: max((stats[c.tag][1] for c in surviving if c.role == r), default=0) / 1e6
                     for r in MIX}
    recovery = {p: max((stats[c.tag][2] for c in surviving if c.role.startswith(p)),
                       default=0) / 1e6 for p in ("http", "ws")}
    unexpected = sum(stats[c.tag][4] for c in run.clients)
    report: dict[str, Any] = {
        "acknowledged": len(acked),
        "acknowledged_by_protocol": dict(per_protocol_acked),
        "delivered": sum(delivered.values()),
        "delivered_unacknowledged": sum(1 for k in delivered if k not in acked),
        "left_in_queues": {k: len(v) for k, v in leftovers.items()},
        "lost": sum(lost.values()),
        "lost_by_queue": {q: lost[q] for q in QUEUES},
        "in_doubt_by_queue": in_doubt,
        "duplicated": duplicated,
        "corrupted": corrupted,
        "reordered": reordered,
        "unexpected_answers": unexpected,
        "longest_stall_s": round(stall, 3),
        "longest_stall_by_role_s": {k: round(v, 3) for k, v in stall_by_role.items()},
        "longest_recovery_s": {k: round(v, 3) for k, v in recovery.items()},
        "kills": dict(run.kills),
        "clients": len(run.clients),
    }
    failures = []
    if duplicated:
        failures.append(f"{duplicated} duplicated")
    if corrupted:
        failures.append(f"{corrupted} corrupted")
    if reordered:
        failures.append(f"{reordered} out of order")
    for q in QUEUES:
        if lost[q] > in_doubt[q]:
            failures.append(f"queue {q}: {lost[q]} lost, only {in_doubt[q]} in doubt")
    if stall >= time_limit:
        failures.append(f"a surviving client stalled {stall:.3f} s")
    if recovery["http"] >= time_limit:
        failures.append(f"an HTTP client took {recovery['http']:.3f} s to recover")
    if unexpected:
        failures.append(f"{unexpected} unexpected answers")
    for p in ("http", "ws", "local"):
        if not per_protocol_acked[p]:
            failures.append(f"no {p} producer got anything acknowledged")
    report["failures"] = failures
    return report


def _attach(namespace: str, backend: str | None) -> Any:
    if backend:
        from zoldyq import redis as zredis

        return zredis.connect(backend, namespace)
    return zoldyq.attach(namespace)


def drain(namespace: str, backend: str | None = None) -> dict[str, list[Any]]:
    broker = _attach(namespace, backend)
    out = {}
    for name in QUEUES:
        q, got = broker.queue(name), []
        while batch := q.get_many(1000):
            got.extend(m.payload for m in batch)
        out[name] = got
    broker.close()
    return out


def chaos(seconds: float, seed: int, kill_interval: float, workers: int, rate: float,
          mix: dict[str, int] = MIX, on_tick: Callable[[Run], None] | None = None,
          kills: bool = True, queue_max_bytes: int | None = None,
          backend: str | None = None, time_limit: float = 1.0) -> dict[str, Any]:
    """Run traffic (and kills) for ``seconds``; drain and return the report.

    ``backend``: a redis:// URL to run every front end and client on Redis.
    ``time_limit``: the longest stall and HTTP recovery that pass (the 1 s target;
    the default suite loosens it, so a loaded box does not fail for its own slowness).
    """
    rng = random.Random(seed)
    namespace = f"zqchaos{os.getpid()}x{seed}"
    workdir = Path(tempfile.mkdtemp(prefix="zoldyq-chaos-"))
    run: Run | None = None
    try:
        with servers.serve(namespace, workers=workers, backend=backend) as srv:
            srv.wait_ready(servers.tcp_ready(srv.ws_port))
            run = Run(srv, workdir, rate)
            run.start(mix, queue_max_bytes)
            end = time.monotonic() + seconds
            next_kill = time.monotonic() + kill_interval
            next_tick = time.monotonic()
            while (now := time.monotonic()) < end:
                if on_tick is not None and now >= next_tick:
                    on_tick(run)
                    next_tick += 1.0
                if kills and now >= next_kill:
                    what = run.kill_one(rng)
                    if what in ("worker", "sidecar"):
                        run.kills[what] += 1
                    next_kill = now + kill_interval * rng.uniform(0.5, 1.5)
                time.sleep(0.02)
            problems = run.stop()
            leftovers = drain(namespace, backend)
            report = analyse(run, leftovers, time_limit)
            report["failures"] += problems
            report["seconds"], report["seed"] = seconds, seed
            report["kill_interval"], report["workers"] = kill_interval, workers
            report["server_tracebacks"] = srv.log().count("Traceback")
            return report
    finally:
        if run is not None:
            run.kill_all()
        with contextlib.suppress(Exception):
            if backend:
                from zoldyq import redis as zredis

                zredis.destroy(backend, namespace)
            else:
                zoldyq.destroy(namespace)
        shutil.rmtree(workdir, ignore_errors=True)


def render(r: dict[str, Any]) -> str:
    k = r["kills"]
    lines = [
        f"chaos: {r['seconds']:g} s, seed {r['seed']}, "
        + (f"a kill every ~{r['kill_interval']:g} s, " if r["kill_interval"] else "no kills, ")
        + f"{r['workers']} gunicorn workers + sidecar, {r['clients']} client processes in all",
        f"kills:        {k.get('worker', 0)} gunicorn workers, {k.get('sidecar', 0)} sidecars, "
        f"{k.get('local-producer', 0)} local producers, "
        f"{k.get('local-consumer', 0)} local consumers",
        f"acknowledged: {r['acknowledged']}  ("
        + ", ".join(f"{p} {n}" for p, n in sorted(r["acknowledged_by_protocol"].items())) + ")",
        f"delivered:    {r['delivered']}  (of which {r['delivered_unacknowledged']} stored by a "
        "request whose answer a kill cut off; "
        + ", ".join(f"{q}: {n}" for q, n in r["left_in_queues"].items()) + " left to drain)",
        f"lost:         {r['lost']}  (by queue " + ", ".join(
            f"{q}: {r['lost_by_queue'][q]} of {r['in_doubt_by_queue'][q]} in doubt"
            for q in QUEUES) + ")",
        f"duplicated:   {r['duplicated']}",
        f"corrupted:    {r['corrupted']}",
        f"reordered:    {r['reordered']}",
        f"unexpected:   {r['unexpected_answers']}",
        f"longest stall of a surviving client: {r['longest_stall_s'] * 1000:.0f} ms; "
        f"recovery after a kill: HTTP {r['longest_recovery_s']['http'] * 1000:.0f} ms, "
        f"WebSocket {r['longest_recovery_s']['ws'] * 1000:.0f} ms (sidecar restart)",
        "longest stall by client kind: " + ", ".join(
            f"{k} {v * 1000:.0f} ms" for k, v in r["longest_stall_by_role_s"].items()),
        "result:       " + ("OK" if not r["failures"] else "FAILED: " + "; ".join(r["failures"])),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kill-interval", type=float, default=0.3)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--rate", type=float, default=150, help="operations/s per producer")
    parser.add_argument("--json", help="also write the report to this file")
    parser.add_argument("--backend", help="run on this Redis (redis://host:port/0)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up like on Ctrl-C
    report = chaos(args.seconds, args.seed, args.kill_interval, args.workers, args.rate,
                   backend=args.backend)
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
