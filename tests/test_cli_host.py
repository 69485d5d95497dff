"""``zoldyq namespaces``, ``zoldyq destroy`` and ``zoldyq --version`` on this host."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest

import zoldyq
from zoldyq.cli import main as cli


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version and zoldyq.__version__ are the installed package's version."""
    assert zoldyq.__version__ == metadata.version("zoldyq")
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"zoldyq {zoldyq.__version__}\n"


def test_namespaces_lists_size_queues_and_processes(
    broker: zoldyq.Broker, capsys: pytest.CaptureFixture[str]
) -> None:
    """A namespace shows up with its queues, its bytes and the processes attached to it."""
    broker.queue("a").put(1)
    broker.queue("b").put(2)
    assert cli.main(["namespaces", "--json"]) == 0
    rows = {r["namespace"]: r for r in json.loads(capsys.readouterr().out)}
    mine = rows[broker.namespace]
    assert mine["queues"] == 2
    assert mine["bytes"] > 0
    assert os.getpid() in mine["pids"]
    assert cli.main(["namespaces"]) == 0
    assert broker.namespace in capsys.readouterr().out


def test_destroy_refuses_while_attached_unless_forced(
    namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """destroy refuses a namespace another process uses, names it, and --force goes ahead."""
    zoldyq.create(namespace).queue("q").put(1)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, zoldyq; b = zoldyq.attach(sys.argv[1]); "
         "b.queue('q').stats(); print('ready', flush=True); sys.stdin.read()", namespace],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"ready\n"
        assert cli.main(["destroy", namespace]) == 1
        err = capsys.readouterr().err
        assert f"namespace '{namespace}' is in use by process(es) {holder.pid}" in err
        assert cli.main(["destroy", namespace, "--force"]) == 0
        assert capsys.readouterr().out == f"destroyed namespace '{namespace}'\n"
        with pytest.raises(zoldyq.NamespaceNotFound):
            zoldyq.attach(namespace).queues()
        assert cli.main(["destroy", namespace]) == 1
    finally:
        holder.kill()
        holder.wait(10)
