"""scripts/shm-leaks, the leak check of scripts/test, looks at the suite's namespaces only."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "shm-leaks"


def _run(shm_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT)], env={"SHM_DIR": str(shm_dir), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=10)


def test_a_running_server_or_another_users_namespace_is_not_a_leak(tmp_path: Path) -> None:
    """Objects of other namespaces (a running scripts/serve, another user) pass the check."""
    for entry in ("zoldyq.zoldyq", "sem.zoldyq.zoldyq", "zoldyq.prod.q0.1", "zoldyq.zqtx"):
        (tmp_path / entry).touch()
    result = _run(tmp_path)
    assert (result.returncode, result.stderr) == (0, "")


def test_the_suites_own_objects_are_reported(tmp_path: Path) -> None:
    """An object of a test namespace (zqt<pid>x<n>) fails the check and is named."""
    (tmp_path / "zoldyq.zoldyq").touch()
    (tmp_path / "sem.zoldyq.zqt123x4.q0.1.ps").touch()
    result = _run(tmp_path)
    assert result.returncode == 3
    assert result.stderr.splitlines()[1:] == ["sem.zoldyq.zqt123x4.q0.1.ps"]
