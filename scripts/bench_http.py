#!/usr/bin/env python
"""HTTP throughput and latency of ZoldyQ, side by side with its ceiling and a Redis baseline.

Usage: .venv/bin/python scripts/bench_http.py [--seconds 2] [--rounds 5]
           [--connections 50] [--worker-class asgi|gthread|both] [--backend shm|redis]
           [--front-ends] [--lease-only] [--no-v0] [--base REF]

Three servers under the same gunicorn settings (2 workers; gthread: 8 threads
each), loaded by wrk over loopback with 50 connections, in the same run:

    zoldyq   this project: POST /queues/b/enqueue, GET /queues/b/dequeue,
             POST /queues/b/batch (100 messages a request)
    noop     a Falcon route that reads the body and answers a constant: the
             ceiling of Falcon + gunicorn here (POST for enqueue, GET for dequeue,
             POST of the same 100-message body for batch: the req/s no batch
             endpoint through Falcon can pass here)
    bare     (asgi only) an ASGI app with no framework: reads the whole body as
             ``zoldyq.http.hot`` does and answers a small constant with the same
             headers. ``hot`` answers enqueue, dequeue and batch ahead of Falcon,
             so this, not ``noop``, is those routes' ceiling on this stack
    redis    the same API on Falcon + Redis lists (LPUSH/RPOP), redis-server
             from Debian on a unix-less TCP port, persistence off
    zq-redis (with ``--backend redis``) ZoldyQ itself on that same Redis: the
             price of its semantics (caps, stats, leases) over plain lists
    plain    this ZoldyQ on gunicorn's plain stack (asyncio loop, Python parser),
             beside the shipped one (uvloop + gunicorn_h1c, gunicorn's "auto")
    v0       the product as it shipped when the speed issue (15) was filed, commit
             c2f19e9: its tree, extracted from this repository's git into a temp
             dir, run by this venv's python with its own gunicorn.conf.py, worker
             classes and settings, on the stack it shipped on (its dependencies had
             neither uvloop nor gunicorn_h1c: asyncio loop, Python parser), in its
             own namespace. ``--no-v0`` leaves it out (it needs git and the commit)
    base     (with ``--base REF``) ZoldyQ at another commit, say ``main``, beside this
             checkout: its tree extracted like v0's, its C extension built in place,
             on the shipped stack with its own gunicorn.conf.py: a change's before
             and after in the same run

The three servers run at the same time and every measurement is repeated
``--rounds`` times, interleaved, so that other load on the host hits them
alike (every other round in the reverse order: with a fixed order, ``base`` at
main, run right after ``zoldyq``, came out 1.2x behind it, where runs in
alternating order measured the pair 0.97x apart): figures are
medians, and each ratio is the median of the ratios of runs made seconds apart
in the same round. Payloads are ~100 bytes of JSON.

With ``--front-ends`` (and ``--backend redis``) it then measures scale-out: enqueues
through one ZoldyQ-on-Redis front end of one worker, against two such front ends on the
same Redis loaded at once (two wrk, half the connections each), interleaved per round.
Each front end needs its own core for two to double one; on a 2-core host the second
front end competes with the first, wrk and redis-server, so this shows the limit here.
Dequeue runs against a queue pre-filled beyond what it can drain, so every
answer carries a message. Needs wrk and
redis-server (installed with apt-get when missing and run as root) and the
``redis`` client (the ``bench`` extra; pip-installed when missing).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import redis_server as redis_helper  # noqa: E402
from tests.helpers import servers  # noqa: E402

PAYLOAD = {"id": 12345, "kind": "email", "to": "someone@example.com", "body": "x" * 40}
WORKERS = 2
THREADS = 8
PREFILL = 200_000  # more than --rounds dequeue runs can drain
V0 = "c2f19e9"  # main when the speed issue was filed: the baseline its targets name
PLAIN_STACK = "--asgi-loop asyncio --http-parser python"  # gunicorn without uvloop, h1c


def ensure_tools() -> None:
    missing = [deb for tool, deb in (("wrk", "wrk"), ("redis-server", "redis-server"))
               if shutil.which(tool) is None]
    if missing:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            sys.exit(f"install {' '.join(missing)} first (apt-get install {' '.join(missing)})")
        print(f"installing {' '.join(missing)} ...", file=sys.stderr)
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                       check=True, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    try:
        import redis  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "redis>=5"], check=True)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway redis-server on loopback, persistence off (the suite's own helper)."""
    with redis_helper.start() as srv:
        yield srv.url


def gunicorn_cmd(app: str, worker_class: str) -> list[str]:
    worker = {"asgi": "zoldyq.serve.worker.AsgiWorker",
              "gthread": "zoldyq.serve.worker.GthreadWorker"}[worker_class]
    # -c /dev/null: the checkout's gunicorn.conf.py (ZoldyQ's hooks, which claim a
    # namespace) is for ZoldyQ, not for the baselines
    return [servers.PYTHON, "-m", "gunicorn", "-c", os.devnull, "-k", worker, "-w", str(WORKERS),
            "--threads", str(THREADS), "--keep-alive", "1", "--no-control-socket",
            "--log-level", "warning", "--chdir", str(ROOT / "scripts"), app]


@contextlib.contextmanager
def baseline(app: str, worker_class: str, env: dict[str, str]) -> Iterator[servers.Server]:
    port = servers.free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [*gunicorn_cmd(app, worker_class), "-b", f"127.0.0.1:{port}"]
    srv = servers.Server(app, cmd, env, url)
    try:
        srv.wait_ready(servers.tcp_ready(port))
        yield srv
    finally:
        srv.close()


def extract(commit: str, into: Path) -> None:
    """The tree of ``commit`` of this repository's git, written under ``into``."""
    if shutil.which("git") is None:
        sys.exit(f"the v0 rows need git (to extract {commit}); install it or pass --no-v0")
    git = ["git", "-C", str(ROOT)]
    if subprocess.run([*git, "cat-file", "-e", f"{commit}^{{commit}}"],
                      capture_output=True, check=False).returncode:
        sys.exit(f"commit {commit} is not in {ROOT}'s git (a shallow clone? "
                 "git fetch --unshallow), or pass --no-v0")
    archive = subprocess.run([*git, "archive", "--format=tar", commit], capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")


def _v0_python(tree: Path, code: str) -> str:
    """Run ``code`` by this venv's python on v0's tree: ``-P`` keeps the working
    directory off ``sys.path``, so PYTHONPATH's tree wins over the installed zoldyq."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([servers.PYTHON, "-P", "-c", code], env=env, capture_output=True,
                          text=True, check=True).stdout


BUILD = """
import shlex, subprocess, sys, sysconfig, tomllib
ext = tomllib.load(open("pyproject.toml", "rb"))["tool"]["setuptools"]["ext-modules"][0]
v = sysconfig.get_config_var
out = ext["name"].replace(".", "/") + v("EXT_SUFFIX")
subprocess.run([*shlex.split(v("LDSHARED")), *shlex.split(v("CFLAGS")), "-fPIC",
                "-I" + sysconfig.get_paths()["include"], *ext.get("extra-compile-args", []),
                *ext["sources"], "-o", out], check=True)
"""


def build_in_place(tree: Path) -> None:
    """The C extension of the tree at ``tree``, built next to its sources (as an editable
    install does), so that it runs the C paths, not the pure-Python fallback: the compiler
    and flags setuptools would use, without the venv's setuptools reading a pyproject.toml
    newer than it."""
    subprocess.run([servers.PYTHON, "-c", BUILD], cwd=tree, check=True, capture_output=True)


@contextlib.contextmanager
def tree_server(commit: str, ns: str, worker_class: str, stack: str | None,
                build: bool) -> Iterator[servers.Server]:
    """ZoldyQ at ``commit``: ``gunicorn -c gunicorn.conf.py workers.http:app`` of its own
    tree, with its settings from ZOLDYQ_* as the current server gets them. Only the launch
    differs: ``-P``, PYTHONPATH and the working directory pick its tree (gunicorn puts the
    working directory first on ``sys.path`` before it reads the config); ``stack``, when
    given, is its GUNICORN_CMD_ARGS (else gunicorn's "auto": this venv's uvloop and h1c);
    ``build``: its C extension is built first."""
    with tempfile.TemporaryDirectory(prefix=f"zoldyq-{commit[:12]}-") as tmp:
        tree = Path(tmp)
        extract(commit, tree)
        if build:
            build_in_place(tree)
        where = _v0_python(tree, "import zoldyq; print(zoldyq.__file__)").strip()
        if not where.startswith(tmp):
            sys.exit(f"v0's server would import zoldyq from {where}, not from {tmp}")
        port = servers.free_port()
        env = servers.settings_env(ns, port=port, workers=WORKERS, threads=THREADS,
                                   worker_class=worker_class,
                                   default_queue_capacity=10_000_000,
                                   default_queue_max_bytes=2 << 30)
        env["PYTHONPATH"] = tmp
        if stack is not None:
            env["GUNICORN_CMD_ARGS"] = stack
        url = f"http://127.0.0.1:{port}"
        srv = servers.Server(f"zoldyq-{commit[:12]}", [
            servers.PYTHON, "-P", "-m", "gunicorn", "-c", "gunicorn.conf.py", "workers.http:app"],
            env, url, cwd=tree)
        try:
            srv.wait_ready(servers.http_ready(url))
            yield srv
        finally:
            srv.close()
            # its gunicorn destroys the namespace it made on exit: this is for a crash
            _v0_python(tree, f"import contextlib, zoldyq\nwith contextlib.suppress("
                             f"zoldyq.NamespaceNotFound): zoldyq.destroy({ns!r})")


def wrk(url: str, seconds: float, connections: int, method: str = "GET",
        body: bytes | None = None) -> dict[str, float]:
    """req/s, p50 and p99 (ms), and non-2xx count of one wrk run."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(f'wrk.method = "{method}"\n')
        if body is not None:
            lua.write(f"wrk.body = {json.dumps(body.decode())}\n")
            lua.write('wrk.headers["Content-Type"] = "application/json"\n')
    try:
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", lua.name, url],
            check=True, capture_output=True, text=True).stdout
    finally:
        os.unlink(lua.name)
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * units[m.group(2)]

    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: .*", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
            "p50": pct("50"), "p99": pct("99"), "bad": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}  # type: ignore[dict-item]


def prefill(url: str, path: str, n: int) -> None:
    batch = {"payloads": [PAYLOAD] * 1000}
    for _ in range(n // 1000):
        r = servers.call(url, "POST", path, json=batch)
        assert r.status == 200, r


def run_class(worker_class: str, seconds: float, connections: int, rounds: int,
              redis_url: str, on_redis: bool = False, v0: bool = True,
              base: str | None = None) -> dict[str, list[dict[str, float]]]:
    """Every measurement ``rounds`` times, interleaved, so that noise from other load on the
    host hits the three servers alike: the runs of each key, in round order."""
    import redis

    import zoldyq

    one = json.dumps({"payload": PAYLOAD}).encode()
    hundred = json.dumps({"payloads": [PAYLOAD] * 100}).encode()
    flavour = "asgi" if worker_class == "asgi" else "wsgi"
    env = servers.settings_env("unused")
    env["BENCH_REDIS_URL"] = redis_url
    r = redis.Redis.from_url(redis_url)
    ns = f"zqbench{os.getpid()}"
    runs: dict[str, list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(zoldyq.destroy, ns)
        noop = stack.enter_context(baseline(f"bench_http_apps:noop_{flavour}", worker_class, env))
        bare = stack.enter_context(baseline("bench_http_apps:bare_asgi", worker_class, env)) \
            if worker_class == "asgi" else None
        zq = stack.enter_context(servers.gunicorn(
            ns, workers=WORKERS, threads=THREADS, worker_class=worker_class,
            default_queue_capacity=10_000_000, default_queue_max_bytes=2 << 30))
        rd = stack.enter_context(baseline(f"bench_http_apps:redis_{flavour}", worker_class, env))
        # the same ZoldyQ on gunicorn's plain stack (asyncio loop, Python parser): what the
        # shipped stack (uvloop + gunicorn_h1c, picked by gunicorn's "auto") is compared with
        os.environ["GUNICORN_CMD_ARGS"] = PLAIN_STACK
        try:
            plain = stack.enter_context(servers.gunicorn(
                ns + "p", workers=WORKERS, threads=THREADS, worker_class=worker_class,
                default_queue_capacity=10_000_000, default_queue_max_bytes=2 << 30))
        finally:
            del os.environ["GUNICORN_CMD_ARGS"]
        stack.callback(zoldyq.destroy, ns + "p")
        zr = stack.enter_context(servers.gunicorn(
            ns + "r", workers=WORKERS, threads=THREADS, worker_class=worker_class,
            default_queue_capacity=10_000_000, default_queue_max_bytes=2 << 30,
            backend=redis_url)) if on_redis else None
        old = stack.enter_context(tree_server(V0, ns + "v0", worker_class, PLAIN_STACK,
                                              build=False)) if v0 else None
        then = stack.enter_context(tree_server(base, ns + "base", worker_class, None,
                                               build=True)) if base else None
        # op: (its ceilings' key, queue, method, body); a ceiling's path is /noop/<queue>
        requests = {"enqueue": ("POST", "b", "POST", one), "dequeue": ("GET", "b", "GET", None),
                    "batch": ("batch", "c", "POST", hundred)}
        # (who, its server, whether it runs batches), in the order the runs follow each other
        who = [("zoldyq", zq, True), ("base", then, True), ("plain", plain, False),
               ("v0", old, False), ("redis", rd, True), ("zq-redis", zr, True)]
        plan = []  # each ZoldyQ run right next to the runs it is compared with
        for op, (ceiling, queue, method, body) in requests.items():
            plan += [(f"{key} {ceiling}", srv.url + f"/noop/{queue}", method, body)
                     for key, srv in (("noop", noop), ("bare", bare)) if srv is not None]
            path = f"/queues/{queue}/{op}"
            plan += [(f"{key} {op}", srv.url + path, method, body) for key, srv, batch in who
                     if srv is not None and (batch or op != "batch")]
        r.flushall()
        for url in (zq.url, rd.url, plain.url, *(s.url for s in (zr, old, then) if s)):
            prefill(url, "/queues/b/batch", PREFILL)
        for _, url, method, body in plan:
            wrk(url, 1, connections, method, body)  # warm-up: imports, connections, caches
        for i in range(rounds):
            # every other round backwards: a server's place in the sequence (say, right after
            # another that filled a fresh ring) weighs on its runs alike in both directions
            for key, url, method, body in plan if i % 2 == 0 else plan[::-1]:
                res = wrk(url, seconds, connections, method, body)
                runs.setdefault(key, []).append(res)
                print(f"  {worker_class:8} round {i + 1}  {key:16} {res['rps']:9.0f} req/s  "
                      f"p50 {res['p50']:6.2f} ms  p99 {res['p99']:6.2f} ms", file=sys.stderr)
            for srv in (zq, then):
                if srv is not None:
                    srv.call("POST", "/queues/c/clear")
            r.delete("c")
            if zr is not None:
                zr.call("POST", "/queues/c/clear")
        for key, values in lease_runs(zq.url, seconds, connections, rounds).items():
            runs[f"lease {key}"] = [{"msgs": v} for v in values]
        assert zq.call("GET", "/queues/b").json()["size"] > 0, "zoldyq queue ran dry"
        assert r.llen("b") > 0, "redis queue ran dry"
        for srv, name in ((old, "v0"), (then, "base")):
            assert srv is None or srv.call("GET", "/queues/b").json()["size"] > 0, \
                f"{name} queue ran dry"
        r.flushall()
    return runs


LEASE_LUA = """
local pending = {}
request = function()
  local ack = table.remove(pending, 1)
  if ack then
    return wrk.format("POST", "/queues/l/ack", {["Content-Type"] = "application/json"}, ack)
  end
  return wrk.format("GET", "/queues/l/dequeue?max=100&lease=30")
end
response = function(status, headers, body)
  local ids = {}
  for id in string.gmatch(body, '"lease_id":"([^"]+)"') do ids[#ids + 1] = '"' .. id .. '"' end
  if #ids > 0 then pending[#pending + 1] = '{"lease_ids":[' .. table.concat(ids, ",") .. ']}' end
end
"""


def lease_runs(url: str, seconds: float, connections: int, rounds: int) -> dict[str, list[float]]:
    """msg/s of ``dequeue?max=100`` against ``dequeue?max=100&lease=30`` plus a batched
    ack of every lease (``lease_ids``), from the server's own counters, interleaved."""
    out: dict[str, list[float]] = {"max100": [], "lease100+ack": []}
    n = int(250_000 * seconds)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(LEASE_LUA)
    try:
        for _ in range(rounds):
            for key in out:
                servers.call(url, "POST", "/queues/l/clear")
                prefill(url, "/queues/l/batch", n)
                field = "acked_total" if "lease" in key else "dequeued_total"
                before = servers.call(url, "GET", "/queues/l").json()[field]
                cmd = ["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
                cmd += ["-s", lua.name, url] if "lease" in key else [
                    url + "/queues/l/dequeue?max=100"]
                t0 = time.monotonic()
                subprocess.run(cmd, check=True, capture_output=True)
                took = time.monotonic() - t0
                after = servers.call(url, "GET", "/queues/l").json()[field]
                out[key].append((after - before) / took)
                print(f"  {key:14} {out[key][-1]:10.0f} msg/s", file=sys.stderr)
    finally:
        os.unlink(lua.name)
    return out


def front_end_runs(redis_url: str, worker_class: str, seconds: float, connections: int,
                   rounds: int) -> list[tuple[float, float]]:
    """(one front end's req/s, two front ends' summed req/s) per round: enqueues, each
    front end one worker on the same Redis namespace."""
    import zoldyq.redis

    one = json.dumps({"payload": PAYLOAD}).encode()
    ns = f"zqfront{os.getpid()}"
    out = []
    with contextlib.ExitStack() as stack:
        stack.callback(zoldyq.redis.destroy, redis_url, ns)
        fronts = [stack.enter_context(servers.gunicorn(
            ns, workers=1, threads=THREADS, worker_class=worker_class, backend=redis_url,
            default_queue_capacity=10_000_000, default_queue_max_bytes=2 << 30))
            for _ in range(2)]
        urls = [f.url + "/queues/f/enqueue" for f in fronts]
        for url in urls:
            wrk(url, 1, connections, "POST", one)  # warm-up
        for i in range(rounds):
            alone = wrk(urls[0], seconds, connections, "POST", one)["rps"]
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                both = sum(r["rps"] for r in pool.map(
                    lambda u: wrk(u, seconds, connections // 2, "POST", one), urls))
            fronts[0].call("POST", "/queues/f/clear")
            out.append((alone, both))
            print(f"  front ends round {i + 1}  one {alone:8.0f} req/s  two {both:8.0f} req/s",
                  file=sys.stderr)
    return out


def front_end_table(runs: list[tuple[float, float]]) -> str:
    ratios = [b / a for a, b in runs]
    return "\n".join([
        "| ZoldyQ on Redis, enqueue | req/s |", "| --- | ---: |",
        f"| one front end (1 worker) | {_median([a for a, _ in runs]):.0f} |",
        f"| two front ends (1 worker each), both loaded | {_median([b for _, b in runs]):.0f} |",
        f"| two ÷ one (min-max) | {_median(ratios):.2f}x ({min(ratios):.2f}-"
        f"{max(ratios):.2f}) |"])


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def vs_table(runs: dict[str, list[dict[str, float]]], title: str, b: str) -> list[str]:
    """The shipped ZoldyQ against server ``b`` on enqueue and dequeue: medians, and the
    median and spread of the per-round ratios."""

    def med(key: str, field: str) -> float:
        return _median([r[field] for r in runs[key]])

    rows = [f"| {title} | shipped req/s | {b} req/s | shipped ÷ {b} (min-max) | "
            f"shipped p99 ms | {b} p99 ms |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for op in ("enqueue", "dequeue"):
        ka, kb = f"zoldyq {op}", f"{b} {op}"
        per = [u["rps"] / v["rps"] for u, v in zip(runs[ka], runs[kb], strict=True)]
        rows.append(f"| {op} | {med(ka, 'rps'):.0f} | {med(kb, 'rps'):.0f} | "
                    f"{_median(per):.2f}x ({min(per):.2f}-{max(per):.2f}) | "
                    f"{med(ka, 'p99'):.2f} | {med(kb, 'p99'):.2f} |")
    return rows


def table(worker_class: str, runs: dict[str, list[dict[str, float]]]) -> str:
    """Medians of the runs; each ratio is the median of the per-round ratios (runs made
    seconds apart), which cancels most of the noise of a shared host."""

    def med(key: str, field: str) -> float:
        return _median([r[field] for r in runs[key]])

    def ratio(a: str, b: str, field: str) -> float:
        return _median([x[field] / y[field] for x, y in zip(runs[a], runs[b], strict=True)])

    has_bare = "bare POST" in runs
    rows = [f"| {worker_class} | req/s | msg/s | p50 ms | p99 ms | vs no-op | vs bare | "
            "vs Redis | p99 vs no-op |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
            "| ---: |"]
    engines = [w for w in ("zoldyq", "base", "zq-redis", "redis") if f"{w} enqueue" in runs]
    for op, ceiling in (("enqueue", "POST"), ("dequeue", "GET"), ("batch", "batch")):
        noop = f"noop {ceiling}"
        for who in engines:
            key = f"{who} {op}"
            per = 100 if op == "batch" else 1
            vs_bare = f"{ratio(key, f'bare {ceiling}', 'rps'):.0%}" if has_bare else "-"
            vs_redis = f"{ratio(key, f'redis {op}', 'rps'):.2f}x" if who != "redis" else "-"
            rows.append(f"| {key}{' (100/req)' if per > 1 else ''} | {med(key, 'rps'):.0f} | "
                        f"{med(key, 'rps') * per:.0f} | {med(key, 'p50'):.2f} | "
                        f"{med(key, 'p99'):.2f} | {ratio(key, noop, 'rps'):.0%} | {vs_bare} | "
                        f"{vs_redis} | {ratio(key, noop, 'p99'):.2f}x |")
    plain, leased = runs["lease max100"], runs["lease lease100+ack"]
    share = _median([x["msgs"] / y["msgs"] for x, y in zip(leased, plain, strict=True)])
    rows.append(f"| zoldyq dequeue?max=100 | - | {_median([r['msgs'] for r in plain]):.0f} "
                "| - | - | - | - | - | - |")
    rows.append(f"| zoldyq dequeue?max=100&lease + ack lease_ids | - | "
                f"{_median([r['msgs'] for r in leased]):.0f} | - | - | {share:.0%} of plain "
                "| - | - | - |")
    for ceiling in ("noop", "bare") if has_bare else ("noop",):
        for kind in ("POST", "GET", "batch"):
            key = f"{ceiling} {kind}"
            bodies = f"{med(key, 'rps') * 100:.0f} (bodies of 100)" if kind == "batch" else "-"
            vs_bare = f"{ratio(key, f'bare {kind}', 'rps'):.0%}" if has_bare else "-"
            rows.append(f"| {key} | {med(key, 'rps'):.0f} | {bodies} | {med(key, 'p50'):.2f} | "
                        f"{med(key, 'p99'):.2f} | {ratio(key, f'noop {kind}', 'rps'):.0%} | "
                        f"{vs_bare} | - | {ratio(key, f'noop {kind}', 'p99'):.2f}x |")
    for other, title in (("plain", "shipped stack vs plain"),
                         ("v0", f"shipped now vs v0 ({V0}) as shipped")):
        if f"{other} enqueue" in runs:
            rows += ["", *vs_table(runs, f"{worker_class}: {title}", other)]
    if has_bare:
        rows += ["", *batch_ceiling_table(runs)]
    return "\n".join(rows)


def batch_ceiling_table(runs: dict[str, list[dict[str, float]]]) -> list[str]:
    """The batch rows against the bare ASGI no-op (the hot routes' ceiling): medians with
    min-max, and the per-round share of it."""

    def spread(values: list[float], fmt: str) -> str:
        return f"{_median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"

    rows = ["| batch of 100 | req/s (min-max) | msg/s (min-max) | share of bare (min-max) |",
            "| --- | ---: | ---: | ---: |"]
    bare = [r["rps"] for r in runs["bare batch"]]
    for key in ("bare batch", "noop batch", "zoldyq batch", "base batch"):
        if key in runs:
            rps = [r["rps"] for r in runs[key]]
            share = [x / y for x, y in zip(rps, bare, strict=True)]
            rows.append(f"| {key} | {spread(rps, '.0f')} | {spread([x * 100 for x in rps], '.0f')}"
                        f" | {spread(share, '.0%')} |")
    if "base batch" in runs:
        per = [x["rps"] / y["rps"] for x, y in zip(runs["zoldyq batch"], runs["base batch"],
                                                  strict=True)]
        rows.append(f"| zoldyq ÷ base | - | - | {spread(per, '.2f')} |")
    return rows


def lease_only(worker_class: str, seconds: float, connections: int, rounds: int) -> str:
    """Only the reliable-delivery rows: one ZoldyQ server, ``lease_runs``."""
    import zoldyq

    ns = f"zqlease{os.getpid()}"
    try:
        with servers.gunicorn(ns, workers=WORKERS, threads=THREADS, worker_class=worker_class,
                              default_queue_capacity=10_000_000,
                              default_queue_max_bytes=2 << 30) as zq:
            lease_runs(zq.url, 1, connections, 1)  # warm-up
            runs = lease_runs(zq.url, seconds, connections, rounds)
    finally:
        zoldyq.destroy(ns)
    plain, leased = runs["max100"], runs["lease100+ack"]
    share = [x / y for x, y in zip(leased, plain, strict=True)]
    return (f"| {worker_class} | msg/s (min-max) |\n| --- | ---: |\n"
            f"| zoldyq dequeue?max=100 | {_median(plain):.0f} ({min(plain):.0f}-{max(plain):.0f}) |"
            f"\n| zoldyq dequeue?max=100&lease + ack lease_ids | {_median(leased):.0f} "
            f"({min(leased):.0f}-{max(leased):.0f}) |\n"
            f"| lease + ack ÷ plain | {_median(share):.0%} ({min(share):.0%}-{max(share):.0%}) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--worker-class", choices=("asgi", "gthread", "both"), default="asgi")
    parser.add_argument("--backend", choices=("shm", "redis"), default="shm",
                        help="redis: also ZoldyQ on the same Redis as the plain lists app")
    parser.add_argument("--front-ends", action="store_true",
                        help="with --backend redis: also one front end against two")
    parser.add_argument("--lease-only", action="store_true",
                        help="only the reliable-delivery rows (leased dequeue + batched ack)")
    parser.add_argument("--v0", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also the product as shipped at {V0} (--no-v0: leave it out)")
    parser.add_argument("--base", metavar="REF",
                        help="also ZoldyQ at this commit (say main) on the shipped stack")
    args = parser.parse_args()
    if args.front_ends and args.backend != "redis":
        parser.error("--front-ends needs --backend redis")
    ensure_tools()
    classes = ["asgi", "gthread"] if args.worker_class == "both" else [args.worker_class]
    if args.lease_only:
        print("\n\n".join(lease_only(wc, args.seconds, args.connections, args.rounds)
                          for wc in classes))
        return 0
    tables = []
    with redis_server() as redis_url:
        for wc in classes:
            res = run_class(wc, args.seconds, args.connections, args.rounds, redis_url,
                            on_redis=args.backend == "redis", v0=args.v0, base=args.base)
            tables.append(table(wc, res))
        if args.front_ends:
            tables.append(front_end_table(front_end_runs(
                redis_url, classes[0], args.seconds, args.connections, args.rounds)))
    print(f"\n{args.connections} connections, medians of {args.rounds} interleaved "
          f"{args.seconds} s runs, {WORKERS} workers (gthread: {THREADS} threads), "
          f"wrk -t2 on the same {os.cpu_count()}-core host\n")
    print("\n\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
