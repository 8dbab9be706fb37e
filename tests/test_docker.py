"""docker/ checked statically (no Docker engine here): compose parses, references resolve, images
install alike."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

import train as train_py

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _command(service: dict) -> list[str]:
    """The service's command as words: a list as is, a string (or `bash -c STRING`) split like a shell."""
    cmd = service.get("command", [])
    words = shlex.split(cmd) if isinstance(cmd, str) else [str(w) for w in cmd]
    if words[:2] in (["bash", "-c"], ["sh", "-c"]):
        words = shlex.split(" ".join(words[2:]))
    return words


def _dockerfile_runs(path: Path) -> list[str]:
    """The RUN instructions of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    return [line[4:] for line in (s.strip() for s in text.splitlines()) if line.startswith("RUN ")]


def test_services_exist_and_builds_resolve(compose):
    services = compose["services"]
    assert {"ray-head", "ray-worker", "tensorboard", "trainer"} <= set(services)
    builds = 0
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        build = svc.get("build")
        if build is None:
            continue
        builds += 1
        context = (DOCKER / build["context"]).resolve()
        assert context == ROOT, f"{name}: build context should be the repository root, got {context}"
        dockerfile = context / build.get("dockerfile", "Dockerfile")
        assert dockerfile.is_file(), f"{name}: {dockerfile} does not exist"
    assert builds >= 4


def test_every_referenced_file_network_volume_and_secret_exists(compose):
    for name, svc in compose["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0] if isinstance(mount, str) else mount["source"]
            if source.startswith((".", "/")):
                assert (DOCKER / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source!r} is not declared"
        for net in svc.get("networks", []):
            assert net in (compose.get("networks") or {}), f"{name}: network {net!r} is not declared"
        for secret in svc.get("secrets", []):
            assert secret in (compose.get("secrets") or {}), f"{name}: secret {secret!r} is not declared"
        for dep in svc.get("depends_on", {}):
            assert dep in compose["services"], f"{name}: depends on unknown service {dep!r}"
        for env_file in svc.get("env_file", []):
            assert (DOCKER / env_file).is_file(), f"{name}: env_file {env_file} does not exist"
    for secret, spec in (compose.get("secrets") or {}).items():
        if "file" in spec:
            assert (DOCKER / spec["file"]).is_file(), f"secret {secret}: {spec['file']} does not exist"


def test_trainer_runs_rllib_against_the_head(compose):
    services = compose["services"]
    head = _command(services["ray-head"])
    assert head[:3] == ["ray", "start", "--head"]
    port = next(w.split("=")[1] for w in head if w.startswith("--port="))
    for name in ("trainer", "trainer-gpu"):
        words = _command(services[name])
        train = words[words.index("train.py") - 1:]
        assert train[0] == "python"
        assert train[train.index("--backend") + 1] == "rllib"
        assert train[train.index("--ray-address") + 1] == f"ray-head:{port}"
        # the compose command line, with the shell's ${VAR:-default} taken at its default, is one
        # train.py accepts
        defaults = [re.sub(r"\$+\{\w+:-([^}]*)\}", r"\1", w) for w in train[2:]]
        train_py.parser().parse_args([w for w in defaults if w])
        # the driver must be a node of the cluster: `ray start --address` to the same head first
        assert f"--address=ray-head:{port}" in words[:words.index("train.py")]
        assert "ray-head" in services[name]["depends_on"]
        assert "runs:/app/runs" in services[name]["volumes"]
    assert "--device" in _command(services["trainer-gpu"])


def test_workers_scale_and_join_the_head(compose):
    worker = compose["services"]["ray-worker"]
    assert "container_name" not in worker and "hostname" not in worker, (
        "a fixed name stops --scale ray-worker=N")
    assert "ports" not in worker
    words = _command(worker)
    assert words[:2] == ["ray", "start"] and "--address=ray-head:6379" in words and "--block" in words


def test_ray_is_isolated_and_authenticated(compose):
    services = compose["services"]
    ray_nets = {n for s in ("ray-head", "ray-worker", "trainer") for n in services[s]["networks"]}
    assert all(compose["networks"][n].get("internal") is True for n in ray_nets), (
        "Ray networks must be internal")
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
        if name != "tensorboard":
            assert "ports" not in svc, f"{name}: Ray ports must not be published"
            env = svc["environment"]
            assert env["RAY_AUTH_MODE"] == "token", f"{name}: Ray token authentication is off"
            assert env["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), (
                f"{name}: the token must be required")
    assert "--include-dashboard=false" in _command(services["ray-head"])
    assert not set(services["tensorboard"].get("networks", [])) & ray_nets, "TensorBoard needs no Ray access"
    assert "/app/runs" in " ".join(_command(services["tensorboard"]))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_install_through_the_makefile(name):
    path = DOCKER / name
    text = path.read_text()
    runs = _dockerfile_runs(path)
    install = [r for r in runs if "make install" in r]
    assert len(install) == 1, "exactly one `make install`: the README's install path"
    assert 'TORCH="$TORCH"' in install[0], "torch must come through the Makefile's TORCH override"
    assert re.search(r"^ARG TORCH=torch==\S+", text, re.M)
    assert not any(re.search(r"pip3? install", r) for r in runs), "no pip install beside the Makefile's"
    assert re.search(r"^COPY \. \.", text, re.M)
    makefile = (ROOT / "Makefile").read_text()
    project = re.search(r'pip install --quiet -e "\.\[dev[\w,]*\]"', makefile)
    assert 'pip install --quiet "$(TORCH)"' in makefile and project, (
        "the Makefile installs torch and the project")
    assert makefile.index('"$(TORCH)"') < project.start(), "torch first, then the project"
    assert "make" in runs[0] and "build-essential" in runs[0]
    assert "PATH=/app/.venv/bin" in text


def test_gpu_image_uses_cuda_and_cpu_image_does_not():
    gpu = (DOCKER / "Dockerfile.gpu").read_text()
    cpu = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S*-runtime-", gpu, re.M)
    assert "download.pytorch.org/whl/cpu" in cpu and "+cpu" in cpu
    assert "whl/cpu" not in gpu
    python = re.search(r"^FROM python:(\d+\.\d+)", cpu, re.M)
    assert python and "python3" in gpu, "both images need the same Python minor version for one Ray cluster"


def test_dockerignore_keeps_local_state_out():
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".venv", "runs", ".git"):
        assert entry in ignored or f"{entry}/" in ignored, entry
