"""Protocol 1.3 (agents in policy groups): the SDK's two-team example and a program written from
docs/protocol.md, as PettingZoo parallel envs; malformed scene replies are protocol faults; older programs get
no 1.3 request; train.py and evaluate.py on the two-team example with a policy per team."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, run_cli, scalars

from envs import errors as E
from envs.bridge import codec
from envs.bridge import protocol as P
from envs.bridge.batch import BatchProgram
from envs.bridge.parallel import BridgeParallelEnv
from envs.bridge.process import ProcessEnv
from envs.faults import FAULT_KEY, RESET_FAULTS_KEY, Fault, FaultKind

TEAMS = ROOT / "examples" / "thirdparty" / "teams.py"
SCENE = ROOT / "tests" / "fixtures" / "bridge" / "scene.py"
PY_TEAMS = f"{sys.executable} {TEAMS}"


def scene(*args: str) -> str:
    return " ".join([sys.executable, str(SCENE), *args])


def reference_teams():
    """The example's scene, in this process: what the program must send."""
    spec = importlib.util.spec_from_file_location("teams_example", TEAMS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Teams()


def policy(agent: str, t: int):
    if agent.startswith("runner"):
        return 2 if (t + int(agent[-1])) % 3 else 1  # mostly right, sometimes stay
    return np.array([0.75], np.float32)


def test_sdk_scene_declares_its_groups_and_matches_the_scene_step_by_step():
    env = BridgeParallelEnv(command=PY_TEAMS)
    assert env.program.spec_reply.version == P.VERSION == "1.3"
    assert env.possible_agents == ["runner_0", "runner_1", "guard_0"]
    assert env.agent_groups == {"runner_0": "runner", "runner_1": "runner", "guard_0": "guard"}
    assert env.action_space("runner_1").n == 3 and env.action_space("guard_0").shape == (1,)
    assert env.observation_space("runner_0").shape == (2,) and env.observation_space("guard_0").shape == (3,)
    ref = reference_teams()
    for seed in (3, 7, 3):
        obs, infos = env.reset(seed=seed)
        want, _ = ref.reset(seed=seed)
        assert env.agents == env.possible_agents and infos == {a: {} for a in env.possible_agents}
        assert all(np.array_equal(obs[a], want[a]) for a in want)
        finished: dict[str, int] = {}
        t = 0
        while env.agents:
            t += 1
            acts = {a: policy(a, t) for a in env.agents}
            got = env.step(acts)
            exp = ref.step(acts)
            assert set(got[0]) == set(acts)  # exactly the live agents, finished ones never again
            for a in acts:
                assert np.array_equal(got[0][a], exp[0][a]) and got[1][a] == pytest.approx(exp[1][a])
                assert (got[2][a], got[3][a], got[4][a]) == (exp[2][a], exp[3][a], exp[4][a])
                if got[2][a] or got[3][a]:
                    finished[a] = t
        assert finished["runner_0"] < finished["runner_1"] == finished["guard_0"], finished  # own steps
        assert not ref.live
    env.close()


def test_a_program_written_from_the_document_steps_only_live_agents(tmp_path):
    log = tmp_path / "log"
    env = BridgeParallelEnv(command=scene("--log", str(log)))
    assert env.observation_space("a_0").shape == (2,) and env.action_space("b_0").shape == (1,)
    obs, _ = env.reset(seed=5)
    assert obs["a_0"].shape == (2,) and obs["b_0"].shape == (1,)
    steps = []
    while env.agents:
        steps.append(env.step({a: 1 if a == "a_0" else np.array([0.5], np.float32) for a in env.agents}))
    assert len(steps) == 3
    assert np.array_equal(steps[1][0]["a_0"], [2, 1]) and steps[1][2] == {"a_0": True, "b_0": False}
    assert list(steps[2][0]) == ["b_0"] and np.array_equal(steps[2][0]["b_0"], [3.5])
    assert steps[2][1] == {"b_0": 0.5} and steps[2][2] == {"b_0": True} and steps[2][4] == {"b_0": {"t": 3}}
    env.close()
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m["type"] for m in sent] == ["reset", "step", "step", "step", "close"]
    assert [m["agents"] for m in sent[1:4]] == [["a_0", "b_0"], ["a_0", "b_0"], ["b_0"]]
    assert sent[3]["actions"] == ["b"]  # the finished agent's group sends nothing


@pytest.mark.parametrize(("mode", "step", "text"), [
    ("unknown", 2, "step_result.agents: 'zz_9' is not an agent this program declared"),
    ("finished", 3, "step_result.agents: 'a_0' is not in this episode any more"),
    ("shape", 2, "step_result.obs['a']: shape [1, 3], expected [1, 2]"),
])
def test_malformed_scene_replies_are_protocol_faults_and_the_program_restarts(tmp_path, mode, step, text):
    env = BridgeParallelEnv(command=scene("--mode", mode, "--once", str(tmp_path / "once")), max_restarts=3)
    last, _ = env.reset(seed=0)
    for t in range(1, step + 1):
        live = list(env.agents)
        obs, rewards, terms, truncs, infos = env.step({a: 0 if a == "a_0" else np.zeros(1, np.float32)
                                                       for a in live})
        if t < step:
            assert not any(FAULT_KEY in i for i in infos.values())
            last.update(obs)
    fault = infos[live[0]][FAULT_KEY]
    assert isinstance(fault, Fault) and fault.kind is FaultKind.PROTOCOL
    assert text in fault.detail, fault.detail
    assert fault.restart and fault.budget == 3 and not fault.shared
    assert all(truncs[a] and not terms[a] and rewards[a] == 0.0 for a in live) and env.agents == []
    assert all(np.array_equal(obs[a], last[a]) for a in live)  # the last valid observations
    for a in live[1:]:  # the other agents carry a copy, counted once
        assert infos[a][FAULT_KEY].shared and not infos[a][FAULT_KEY].restart
    env.reset()  # restarted: the new copy behaves for a whole episode
    assert env.program.restarts == 1
    infos = env.step({"a_0": 1, "b_0": np.zeros(1, np.float32)})[4]
    assert not any(FAULT_KEY in i or RESET_FAULTS_KEY in i for i in infos.values())
    while env.agents:
        infos = env.step({a: 0 if a == "a_0" else np.zeros(1, np.float32) for a in env.agents})[4]
        assert not any(FAULT_KEY in i for i in infos.values())
    env.close()


@pytest.mark.parametrize(("make", "text"), [
    (lambda: BridgeParallelEnv(command=scene("--mode", "many")), "spec.agents: expected a list of 1 to 4096"),
    (lambda: BridgeParallelEnv(command=scene("--mode", "old")),
     "needs protocol 1.3, and its challenge says 1.2"),
    (lambda: BridgeParallelEnv(command=f"{sys.executable} {ROOT / 'examples' / 'thirdparty' / 'heater.py'}"),
     "declares no agents (a single-agent program, protocol 1.3); train it with --env process"),
    (lambda: ProcessEnv(command=PY_TEAMS),
     "declares agents (protocol 1.3: 3 agents in policy groups), which --env process drives as one agent; "
     "train it with --env envs.bridge.parallel:BridgeParallelEnv"),
], ids=["5000-agents", "agents-in-1.2", "no-agents", "agents-to-process"])
def test_specs_that_do_not_fit_are_one_startup_error_not_retried(make, text):
    with pytest.raises(E.SpecError) as err:
        make()
    assert text in str(err.value), str(err.value)


def test_a_1_2_program_gets_no_1_3_request(tmp_path):
    log = tmp_path / "log"
    prog = BatchProgram(command=scene("--mode", "spy12", "--log", str(log)))
    prog.want_autoreset = True
    prog.reset_instances([0, 1], [0, 1])
    for _ in range(3):
        assert prog.step_all(np.zeros((2, 1), np.float32)).fault is None
    prog.close()
    with pytest.raises(E.SpecError, match="declares no agents"):
        BridgeParallelEnv(command=scene("--mode", "spy12", "--log", str(log)))
    sent = [json.loads(line) for line in log.read_text().splitlines()]
    assert [m["type"] for m in sent] == ["reset", "step", "step", "step", "close"]  # nothing after refusal
    assert all("agents" not in m["keys"] for m in sent) and all("autoreset" in m["keys"] for m in sent[1:4])


def test_the_sdk_refuses_a_scene_to_a_1_2_trainer():
    proc = subprocess.Popen([sys.executable, str(TEAMS)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    chan = P.Channel(proc.stdout.fileno(), proc.stdin.fileno())
    P.send(chan, {"type": "hello", "version": "1.2", "nonce": "00"}, 5)
    with pytest.raises(E.RemoteError, match="declares agents, which needs protocol 1.3; nondiff speaks 1.2"):
        P.recv(chan, 10)
    proc.kill()
    proc.wait()


TEAMS_RUN = ["--config", str(ROOT / "examples" / "thirdparty" / "teams.yaml"), "--num-envs", "2",
             "--set", "agent.n_steps=64", "--set", "agent.n_epochs=1", "--quiet"]


def test_train_with_a_policy_per_team_then_evaluate(tmp_path):
    run = tmp_path / "run"
    run_cli("train.py", *TEAMS_RUN, "--timesteps", "2000", "--seed", "1", "--run-dir", str(run),
            "--set", "eval.every=1000", "--set", "eval.episodes=2", check=True)
    header = json.loads((run / "final" / "model.json").read_text())
    assert set(header["policies"]) == {"runner", "guard"}
    assert header["policies"]["runner"]["agents"] == ["runner_0", "runner_1"]
    tags = set(scalars(run).Tags()["scalars"])
    for name in ("runner", "guard"):
        want = {f"policy/{name}/{t}" for t in ("train/loss", "rollout/ep_rew_mean", "rollout/ep_len_mean")}
        assert want <= tags, want - tags
        assert f"eval/policy/{name}/return" in tags
    out = tmp_path / "eval.json"
    proc = run_cli("evaluate.py", str(run), "--episodes", "2", "--json", str(out), check=True)
    assert "policy/runner/return" in proc.stdout and "policy/guard/return" in proc.stdout
    res = json.loads(out.read_text())
    assert set(res["metrics"]) == {"policy/runner/return", "policy/guard/return"} and res["episodes"] == 2


def test_a_training_run_survives_malformed_scene_replies(tmp_path):
    """Both copies' programs name a finished agent once (at their 3rd step): two counted protocol faults, two
    restarts within the run's budget, and the run ends normally."""
    mode = "finished"
    config = tmp_path / "scene.yaml"
    config.write_text(json.dumps({
        "env": {"id": "envs.bridge.parallel:BridgeParallelEnv", "max_restarts": 4,
                "command": scene("--mode", mode, "--once", str(tmp_path / "once"))},
        "agent": {"algo": "ppo", "n_steps": 32, "batch_size": 32, "n_epochs": 1, "net_arch": [16]},
        "policies": {"a": {"agents": ["a_*"]}, "b": {"agents": ["b_*"]}},
        "train": {"num_envs": 2}, "eval": {"every": 0}}))
    run = tmp_path / "run"
    proc = run_cli("train.py", "--config", str(config), "--timesteps", "256", "--seed", "1",
                   "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr
    assert "protocol fault" in proc.stdout + proc.stderr
    acc = scalars(run)
    assert acc.Scalars("env/faults_by_kind/protocol")[-1].value == 2
    assert acc.Scalars("env/restarts")[-1].value == 2


def test_the_bridge_token_reaches_a_program_that_declares_agents(monkeypatch):
    """NONDIFF_TOKEN reaches BridgeParallelEnv (it takes a token) in the team env evaluation plays and in the
    training copies; the program proves it (teams.py serves with NONDIFF_TOKEN, which it inherits)."""
    from agents.config import validate
    from agents.run.envfactory import env_factory, make_policy_vector_envs
    from agents.run.resolved import resolve_env

    monkeypatch.setenv("NONDIFF_TOKEN", "s3cret")
    cfg = validate({"env": {"id": "envs.bridge.parallel:BridgeParallelEnv", "command": PY_TEAMS},
                    "policies": {"runner": {"agents": ["runner_*"]}, "guard": {"agents": ["guard_*"]}},
                    "train": {"num_envs": 1}}, "test")
    resolved = resolve_env(cfg, channels_first=True)
    assert resolved.multi_agent and resolved.takes_token
    team = env_factory(cfg, resolved)()
    obs, _ = team.reset(seed=0)
    assert set(obs) == {"runner", "guard"} and obs["runner"].shape == (2, 2)
    team.close()
    venvs = make_policy_vector_envs(cfg, resolved)
    assert venvs.groups.copies.envs[0].program.token == "s3cret"
    venvs.groups.copies.close()


def test_the_documented_spec_and_step_are_what_the_trainer_sends_and_accepts():
    """docs/protocol.md, "Agents (1.3)": its spec parses, its step request is byte for byte the header the
    trainer sends, and its step reply (arrays filled with zeros) decodes and parses."""
    import re

    from envs.bridge import agentsmsg as A

    doc = (ROOT / "docs" / "protocol.md").read_text()
    section = doc[doc.index("## Agents (1.3)"):doc.index("### In the trainer (1.3)")]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    spec = A.parse_agents_spec(json.loads(blocks[0]))
    assert [d.id for d in spec.agents] == ["runner_0", "runner_1", "guard_0"]
    request, reply = (json.loads(part.strip()) for part in blocks[1].split("trainer:")[1].split("program:"))
    sent = codec.encode(A.step_request(spec, {"runner_1": 2, "guard_0": np.array([0.5], np.float32)}))
    assert json.loads(sent[8:8 + int.from_bytes(sent[4:8], "big")]) == request
    data = sum(np.dtype(a["dtype"]).itemsize * int(np.prod(a["shape"])) for a in reply["arrays"])
    head = json.dumps(reply).encode()
    msg = codec.decode(len(head).to_bytes(4, "big") + head + bytes(data))
    parsed = A.parse_scene_step(msg, spec, ["runner_1", "guard_0"])
    assert parsed.agents == ("runner_1", "guard_0") and parsed.obs["guard_0"].shape == (3,)
    assert parsed.infos["runner_1"] == {"is_success": True} and parsed.rewards.shape == (2,)


def _spec(**change):
    box = {"type": "Box", "low": -1, "high": 1, "shape": [3]}
    msg = {"type": "spec", "env": "s", "version": "1.3",
           "groups": {"g": {"observation_space": box, "action_space": {"type": "Discrete", "n": 2}}},
           "agents": [{"id": "a_0", "group": "g"}, {"id": "a_1", "group": "g"}]}
    return {**msg, **change}


@pytest.mark.parametrize(("change", "limits", "text"), [
    ({"agents": [{"id": "a_0", "group": "g"}, {"id": "a_0", "group": "g"}]}, {}, "'a_0' is declared twice"),
    ({"agents": [{"id": "a_0", "group": "h"}]}, {}, "spec.agents[0].group: 'h' is not in spec.groups"),
    ({"agents": [{"id": "a b", "group": "g"}]}, {}, "spec.agents[0].id: expected 1 to 64 letters"),
    ({"num_instances": 2}, {}, "spec.num_instances: a spec that declares agents"),
    ({"groups": {}}, {}, "spec.groups: expected an object of 1 to 64 policy groups, got 0 groups"),
    ({"groups": {"g": {"observation_space": {"type": "Box", "low": 0, "high": 1, "shape": [3]},
                       "action_space": {"type": "Discrete", "n": 2}},
                 "idle": {"observation_space": {"type": "Discrete", "n": 2},
                          "action_space": {"type": "Discrete", "n": 2}}}}, {}, "spec.groups.idle: no agent"),
    ({"groups": {"g": {"observation_space": {"type": "Box", "low": 0, "high": 1, "shape": [3]},
                       "action_space": {"type": "Dict", "spaces": {}}}}}, {}, "actions travel stacked"),
    ({}, {"max_elements": 5}, "observation_space: 2 instances × 3 or more elements each = 6, over the limit"),
    ({}, {"max_message": 40}, "every step_result of this scene would carry at least 44 bytes"),
], ids=["duplicate", "unknown-group", "bad-id", "num_instances", "no-group", "empty-group", "dict-action",
        "elements", "message-size"])
def test_malformed_agent_specs_name_the_field(change, limits, text):
    from envs.bridge.agentsmsg import parse_agents_spec

    with pytest.raises(E.SpecError) as err:
        parse_agents_spec(_spec(**change), **limits)
    assert text in str(err.value), str(err.value)


def test_connect_mode_without_a_command_is_refused_for_a_scene_in_one_line(tmp_path):
    """Connect mode (env.listen alone) serves single-agent envs; a scene's refusal says so, on sb3 too."""
    cfg = tmp_path / "scene.yaml"
    cfg.write_text("env: {id: 'envs.bridge.parallel:BridgeParallelEnv', listen: '127.0.0.1:0'}\n")
    proc = run_cli("train.py", "--config", str(cfg), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "serves single-agent envs" in lines[0] and "env.command" in lines[0], lines
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()
