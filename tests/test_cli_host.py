"""``zoldyq namespaces`` and ``zoldyq --version`` on this host."""

from __future__ import annotations

import json
import os
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
    assert mine["server"] is None  # no server owns it
    assert cli.main(["namespaces"]) == 0
    assert broker.namespace in capsys.readouterr().out
