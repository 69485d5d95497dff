"""Schemathesis against the served ``/openapi.json`` of a real gunicorn with two workers.

Every route, with generated (valid and invalid) path parameters, query strings,
bodies and the bearer token, through every schemathesis check: no 500, no
status or body the document does not list, no request that hangs (each has
10 s). The suite runs a bounded number of examples per phase;
``scripts/fuzz_http.sh`` runs the same thing for longer (``FUZZ_EXAMPLES``,
``FUZZ_MAX_TIME``). ``FUZZ_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(servers.PYTHON).with_name("st")
TOKEN = "fuzz-token"


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    examples = os.environ.get("FUZZ_EXAMPLES", "40")
    ns = unique_namespace()
    # short long-polls so generated timeouts do not eat the time budget
    with servers.gunicorn(ns, workers=2, token=TOKEN, max_queues=32, dequeue_max_timeout=0.5,
                          max_batch=100, snapshot_dir=str(tmp_path / "snapshots"),
                          default_queue_capacity=1000, default_queue_max_bytes=1 << 20,
                          max_message_bytes=64 << 10) as srv:
        (tmp_path / "snapshots").mkdir()
        cmd = [str(ST), "--config-file", str(CONFIG), "run", srv.url + "/openapi.json",
               "-H", f"Authorization: Bearer {TOKEN}", "--checks", "all",
               # use_after_free wants 404 on GET /queues/X after DELETE unless a request on
               # a prefix of /queues/X re-created it; POST /queues/X/enqueue creates X too
               "--exclude-checks", "use_after_free",
               "--max-examples", examples, "--workers", "1", "--request-timeout", "10",
               "--no-color"]
        if os.environ.get("FUZZ_MAX_TIME"):
            cmd += ["--max-time", os.environ["FUZZ_MAX_TIME"]]
        if os.environ.get("FUZZ_SEED"):
            cmd += ["--seed", os.environ["FUZZ_SEED"]]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                             env={**os.environ, "NO_COLOR": "1"})
        log = srv.log()
        errors = "\n".join(line for line in log.splitlines() if " ERROR " in line
                           or line.startswith(("Traceback", "  ", "zoldyq", "Exception")))
        assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:] + errors[-10000:]
        assert "Traceback" not in log, errors[-10000:]
        assert srv.call("GET", "/health").status == 200


def test_a_cached_handle_outlives_its_deleted_queue(namespace: str) -> None:
    """Found by the long run (500s with ValueError): a queue deleted and re-created while a
    worker cached its handle, then the engine closing the retired mapping 30 s later."""
    import time
    from unittest import mock

    import zoldyq
    from zoldyq.http import core
    from zoldyq.settings import Settings

    broker = zoldyq.create(namespace, max_queues=4, max_messages=100, max_bytes=1 << 16,
                           max_message_bytes=1024)
    other = zoldyq.attach(namespace)  # another worker
    try:
        ctx = core.Ctx(Settings.load(env={"ZOLDYQ_CONFIG": os.devnull}), broker)
        assert core.enqueue(ctx, core.Call(None, b'{"payload": 1}'), "a").status == 200
        other.delete("a")
        broker.queue("a").put(2)  # the old mapping is retired
        later = time.monotonic() + 31
        with mock.patch("time.monotonic", return_value=later):
            other.delete("a")
            broker.queue("a").put(3)  # ... and closed now
            assert core.enqueue(ctx, core.Call(None, b'{"payload": 4}'), "a").status == 200
            assert core.clear_queue(ctx, core.Call(), "a").status == 200
    finally:
        other.close()
        broker.close()
