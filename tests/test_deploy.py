"""What ships: the wheel (installed outside the checkout, serving an example), the Dockerfile,
docker-compose.yml and the Kubernetes manifest (no container engine here: their commands
are run the same way and their files checked against the settings)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path
from typing import Any

import pytest
import yaml

import zoldyq
from tests.helpers import servers
from tests.helpers.namespaces import unique_namespace
from zoldyq.settings import SETTINGS

ROOT = servers.ROOT
KNOWN = {s.env for s in SETTINGS} | {"ZOLDYQ_URL"}


def zoldyq_names(text: str) -> set[str]:
    return set(re.findall(r"\bZOLDYQ_[A-Z0-9_]+", text))


def load(path: str) -> Any:
    return list(yaml.safe_load_all((ROOT / path).read_text()))


def mib(size: str) -> int:
    number, unit = re.fullmatch(r"(\d+)\s*([KMG]i?|[kmg])?", size).groups()  # type: ignore[union-attr]
    return int(number) * {"k": 1 / 1024, "m": 1, "g": 1024}[(unit or "m")[0].lower()]  # type: ignore[return-value]


def test_every_zoldyq_variable_is_a_setting() -> None:
    """Each ZOLDYQ_* name in the Dockerfile, compose file and manifest is one the server reads."""
    for path in ("Dockerfile", "docker-compose.yml", "deploy/kubernetes.yaml",
                 "deploy/zoldyq.service"):
        unknown = zoldyq_names((ROOT / path).read_text()) - KNOWN
        assert not unknown, f"{path}: {sorted(unknown)}"


def test_compose_file() -> None:
    """The server gets a /dev/shm as large as its caps, a health check and time to drain;
    Prometheus scrapes it and Grafana is provisioned with the dashboard from deploy/."""
    [doc] = load("docker-compose.yml")
    s = doc["services"]
    env = s["zoldyq"]["environment"]
    assert mib(s["zoldyq"]["shm_size"]) >= int(env["ZOLDYQ_MAX_QUEUES"]) * int(
        env["ZOLDYQ_DEFAULT_QUEUE_MAX_BYTES"]) / (1 << 20)
    assert "/health" in " ".join(s["zoldyq"]["healthcheck"]["test"])
    for client in ("welcome-emails", "image-pipeline"):
        assert s[client]["environment"]["ZOLDYQ_URL"] == "http://zoldyq:9000"
        script = s[client]["entrypoint"][-1].replace("/opt/zoldyq/", "")
        assert (ROOT / script).is_file()
    for mount in s["prometheus"]["volumes"] + s["grafana"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).exists(), mount
    [prom] = load("deploy/compose/prometheus.yml")
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["zoldyq:9000"]
    [dash] = load("deploy/grafana/provisioning/dashboards/zoldyq.yml")
    assert dash["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_kubernetes_manifest() -> None:
    """A memory-backed /dev/shm sized for the caps, probes on /health, and a SIGTERM grace
    longer than the server's own graceful timeout."""
    docs = {d["kind"]: d for d in load("deploy/kubernetes.yaml")}
    env = docs["ConfigMap"]["data"]
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    [shm] = [v for v in pod["volumes"] if v["name"] == "dshm"]
    assert shm["emptyDir"]["medium"] == "Memory"
    assert mib(shm["emptyDir"]["sizeLimit"]) >= int(env["ZOLDYQ_MAX_QUEUES"]) * int(
        env["ZOLDYQ_DEFAULT_QUEUE_MAX_BYTES"]) / (1 << 20)
    [box] = pod["containers"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in box["volumeMounts"]
    assert box["readinessProbe"]["httpGet"]["path"] == "/health"
    assert box["livenessProbe"]["httpGet"]["path"] == "/health"
    assert pod["terminationGracePeriodSeconds"] > float(env["ZOLDYQ_GRACEFUL_TIMEOUT"])
    assert docs["Deployment"]["spec"]["replicas"] == 1


@pytest.mark.slow
@pytest.mark.timeout(900)  # pip resolves and installs the runtime deps into a fresh venv
def test_wheel_installs_outside_the_checkout_and_serves(tmp_path: Path) -> None:
    """The built wheel in a fresh venv: no top-level ``workers`` package, and its
    ``zoldyq serve`` (the image's entry command) serves an example from another directory."""
    dist = tmp_path / "dist"
    subprocess.run([servers.PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist),
                    str(ROOT)], check=True, timeout=300, capture_output=True)
    [wheel] = dist.glob("zoldyq-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheel)], check=True, timeout=600,
                   capture_output=True)
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout
    assert not (Path(site.strip()) / "workers").exists()
    work = tmp_path / "elsewhere"
    work.mkdir()
    ns, port, ws_port = unique_namespace(), servers.free_port(), servers.free_port()
    docker_env = dict(re.findall(r"(ZOLDYQ_[A-Z_]+)=(\S+)", (ROOT / "Dockerfile").read_text()))
    env = {**servers.settings_env(ns), **docker_env, "ZOLDYQ_HOST": "127.0.0.1",
           "ZOLDYQ_PORT": str(port), "ZOLDYQ_WS_PORT": str(ws_port),
           "PATH": f"{env_dir / 'bin'}:{os.environ['PATH']}"}
    srv = servers.Server("wheel-serve", [str(env_dir / "bin" / "zoldyq"), "serve"], env,
                         f"http://127.0.0.1:{port}")
    try:
        srv.wait_ready(servers.http_ready(srv.url), timeout=60)
        shutil.copy(ROOT / "examples" / "image_pipeline.py", work)
        done = subprocess.run([str(py), "image_pipeline.py"], cwd=work, timeout=120, text=True,
                              env={**env, "ZOLDYQ_URL": srv.url}, capture_output=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "20 thumbnails queued" in done.stdout
        assert srv.stop() == 0
    finally:
        srv.close()
        zoldyq.destroy(ns)


@pytest.mark.parametrize("path", ["LICENSE", "CHANGELOG.md"])
def test_release_files(path: str) -> None:
    """The wheel's metadata says MIT; the LICENSE says so too, and a CHANGELOG exists."""
    text = (ROOT / path).read_text()
    assert ("MIT License" in text) if path == "LICENSE" else ("## [Unreleased]" in text)
