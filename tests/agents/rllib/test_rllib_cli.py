"""Bad input on the RLlib backend: one line on stderr, exit code 2, no traceback, in seconds, Ray
never started."""

from __future__ import annotations

import time

import pytest
from conftest import free_port, run_cli

import train


def test_unreachable_ray_address_fails_fast_with_one_line(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    t = time.monotonic()
    proc = run_cli("train.py", "--env", "CartPole-v1", "--backend", "rllib", "--ray-address", address,
                   "--quiet", "--run-dir", str(tmp_path / "run"), timeout=120)
    elapsed = time.monotonic() - t
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --ray-address '{address}': no Ray cluster is reachable there "
                      "(Connection refused); start one with `ray start --head` (docs/distributed.md) or drop "
                      "--ray-address to train on a private local Ray"]
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s; ray.init alone would retry for minutes"
    assert not (tmp_path / "run").exists()  # nothing ran: the same --run-dir is free for the fixed command


BAD = [
    (["--ray-address", "ray://127.0.0.1:{port}"],
     r"--ray-address 'ray://127\.0\.0\.1:\d+': no Ray cluster is reachable"),
    (["--ray-address", "headnode"], r"expected HOST:PORT \(GCS, e\.g\. head:6379\) or ray://HOST:PORT"),
    (["--set", "rllib.extra={nonsense_key: 1}"],
     r"unknown key 'rllib\.extra\.nonsense_key': RLlib's PPOConfig has no such setting; "
     r"use a PPOConfig attribute"),
    (["--set", "rllib.extra={vf_clip_parm: 5}"], r"did you mean 'rllib\.extra\.vf_clip_param'\?"),
    (["--set", "rllib.extra={minibatch_size: 100000}"],
     r"RLlib rejected the configuration: `minibatch_size` \(100000\) must be <= "
     r"`train_batch_size_per_learner`"),
    (["--set", "rllib.num_env_runner=2"], r"did you mean 'num_env_runners'\?"),
    # more runners than the private Ray has CPUs: RLlib waited for them for ever, silently
    (["--num-env-runners", "4096"],
     r"rllib\.num_env_runners=4096 needs 4096 CPUs from Ray \(one each\) and the private local Ray has \d+ "
     r"\(this machine\); RLlib would wait for them"),
    (["--num-env-runners", "3", "--set", "rllib.num_cpus=2", "--set", "rllib.num_learners=1"],
     r"rllib\.num_env_runners=3 with rllib\.num_learners=1 need 4 CPUs .* has 2 \(rllib\.num_cpus\).*"
     r"use --num-env-runners 1 or fewer"),
]


@pytest.mark.parametrize(("flags", "message"), BAD, ids=["ray-client-closed", "no-port", "unknown-extra",
                                                          "extra-typo", "rllib-validation", "section-typo",
                                                          "runners-over-cores", "runners-over-num-cpus"])
def test_bad_rllib_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    import re

    flags = [f.replace("{port}", str(free_port())) for f in flags]
    t = time.monotonic()
    code = train.main(["--env", "CartPole-v1", "--backend", "rllib", "--quiet",
                       "--run-dir", str(tmp_path / "run"), *flags])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert time.monotonic() - t < 30
    import ray

    assert not ray.is_initialized(), "bad input must be refused before Ray starts"


def test_unknown_rllib_key_in_the_yaml_file(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("env: {id: CartPole-v1}\nagent: {backend: rllib}\n"
                      "rllib:\n  extra:\n    nonsense_key: 1\n")
    code = train.main(["--config", str(config), "--quiet", "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert "unknown key 'rllib.extra.nonsense_key'" in capsys.readouterr().err


def test_runners_over_a_joined_clusters_cpus_are_a_warning_not_an_error(shared_ray):
    """On a cluster more nodes may join, so asking for more CPUs than it has now is a warning (the private
    local Ray refuses it, above). The shared Ray has 2 CPUs."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    code = f"""
import logging, ray
from agents.config import RunConfig
from agents.rllib.runners import check_cpus
logging.basicConfig(level=logging.WARNING, format="%(message)s")
ray.init(address={shared_ray.address!r}, logging_level=logging.ERROR)
for runners in (2, 64):
    check_cpus(RunConfig.model_validate({{"agent": {{"backend": "rllib"}},
                                         "rllib": {{"address": {shared_ray.address!r},
                                                    "num_env_runners": runners}}}}))
print("returned")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **shared_ray.env})
    assert proc.returncode == 0 and "returned" in proc.stdout, proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if "ask the cluster" in line]
    assert len(warnings) == 1 and "for 64 CPUs (one each) and it has 2" in warnings[0], proc.stderr
