"""Multi-node RLlib on one machine (ray.cluster_utils.Cluster): a worker node dies mid-training."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import ROOT, read_checkpoint

from agents.run import checkpoint

pytestmark = pytest.mark.ray


def test_node_failure_does_not_lose_the_run(tmp_path):
    from ray.cluster_utils import Cluster

    # head without CPUs: the env runners must live on the worker nodes; the third node is spare capacity
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=1) for _ in range(3)]
    cluster.wait_for_nodes()
    run = tmp_path / "run"
    try:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), "--env", "CartPole-v1", "--backend", "rllib",
             "--ray-address", cluster.address, "--num-env-runners", "2", "--envs-per-runner", "2",
             "--num-envs", "4", "--timesteps", "12000", "--seed", "0", "--run-dir", str(run), "--quiet",
             "--set", "agent.n_steps=128", "--set", "agent.batch_size=128", "--set", "agent.n_epochs=2",
             "--set", "eval.every=0", "--set", "train.checkpoint_every=2000"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ})
        deadline = time.time() + 300
        while not list((run / "checkpoints").glob("step_*.safetensors")) and time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(proc.communicate())
            time.sleep(0.2)
        import ray
        from ray._private import state  # the GCS view; the public state API needs the dashboard

        ray.init(address=cluster.address, log_to_driver=False)
        runners = [a for a in state.actors().values()
                   if a["ActorClassName"].endswith("SingleAgentEnvRunner") and a["State"] == "ALIVE"]
        hosts = {a["Address"]["NodeID"] for a in runners}
        ray.shutdown()
        assert len(runners) == 2 and len(hosts) == 2, "the two env runners should sit on two different nodes"
        victim = next(n for n in workers if n.node_id in hosts)
        cluster.remove_node(victim)  # a worker node dies, with the env runner on it
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        _, meta = read_checkpoint(run / "final" / "model.safetensors")
        assert meta["num_timesteps"] >= 12000
        for ckpt in (run / "checkpoints").glob("step_*.safetensors"):
            checkpoint.load(ckpt)  # every checkpoint intact
    finally:
        cluster.shutdown()
