"""train.py and evaluate.py on a PettingZoo parallel env (issue 31): every agent one slot of one shared
policy; evaluation plays the whole team and reports its agents' mean return."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli

pytest.importorskip("mpe2")

SPREAD = "mpe2.simple_spread_v3:parallel_env"
FAST = ["--set", "agent.n_steps=32", "--set", "agent.batch_size=96", "--set", "agent.n_epochs=1",
        "--num-envs", "2", "--quiet"]


def test_train_then_evaluate_a_cooperative_parallel_env(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", "--env", SPREAD, "--timesteps", "192", "--seed", "2", "--run-dir", str(run),
            "--set", "eval.every=192", "--set", "eval.episodes=2", *FAST, check=True)
    for name in ("config.yaml", "final/model.safetensors", "best/model.safetensors", "evaluations.jsonl"):
        assert (run / name).is_file(), name
    header = json.loads((run / "final" / "model.json").read_text())
    assert header["num_timesteps"] == 192  # 32 steps x 2 copies x 3 agents: agent-steps
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "3", "--json", str(out), check=True)
    assert "trained" in proc.stdout and "random" in proc.stdout
    res = json.loads(out.read_text())
    assert res["episodes"] == 3 and res["mean_length"] == 25.0  # simple_spread's max_cycles
    assert -200 < res["mean_return"] < 0 and -200 < res["random_mean_return"] < 0
    done = run_cli("train.py", "--resume", str(run), "--timesteps", "192", "--quiet", check=True)
    assert "resuming" in done.stdout
    assert json.loads((run / "final" / "model.json").read_text())["num_timesteps"] == 384


@pytest.mark.parametrize(("env_id", "extra", "said"), [
    ("mpe2.simple_adversary_v3:parallel_env", [], ["different observation spaces", "pad_observations_v0"]),
    (SPREAD, ["--backend", "rllib"], ["PettingZoo parallel env", "use --backend sb3"]),
], ids=["different-spaces", "rllib"])
def test_refusals_exit_2_in_one_line(tmp_path, env_id, extra, said):
    proc = run_cli("train.py", "--env", env_id, *extra, "--timesteps", "64", "--run-dir", str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert all(text in lines[0] for text in said), lines[0]
