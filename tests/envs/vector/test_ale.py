"""``train.vec_env: ale`` (envs/vector/ale.py): ALE's C++ vector env under the Guard's checks, the time limit
and the episode statistics, as SB3 sees it, against the eval path's ``game`` adapter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli
from gymnasium import spaces

import envs
from agents.sb3.vector import SB3VecEnv
from envs.faults import FAULT_KEY, LATENCY_KEY, faults_in
from envs.vector.ale import make_ale_vector_env
from envs.vector.episode_stats import EpisodeStatistics


def AleVecEnv(num_envs, threads=1, *, nan_policy="truncate", bounds_policy="clip", max_episode_steps=None,  # noqa: N802
              **kwargs):
    """``train.vec_env: ale`` as training builds it, seen through SB3's adapter."""
    venv = SB3VecEnv(EpisodeStatistics(make_ale_vector_env(num_envs, threads, kwargs, nan_policy,
                                                           bounds_policy, max_episode_steps)))
    venv.guard = venv.venv.env  # the Guard's checks (envs/vector/row_guard.py)
    return venv


def _lockstep(game: str, steps: int, actions: int, **kw):
    """Step AleVecEnv (2 envs, the same actions) and the game adapter side by side; yield both transitions."""
    vec = AleVecEnv(2, game=game, noop_max=0, **kw)
    ref = envs.make("game", game=game, noop_max=0, **kw)
    assert vec.observation_space == ref.observation_space and vec.action_space == ref.action_space
    obs = vec.reset()
    o, _ = ref.reset(seed=0)
    yield obs, o, None, None
    rng = np.random.default_rng(0)
    for _ in range(steps):
        a = int(rng.integers(actions))
        got = vec.step(np.array([a, a]))
        o, r, term, trunc, _ = ref.step(a)
        want = (o, r, term, trunc)
        if term or trunc:
            want = (ref.reset()[0], r, term, trunc, o)
        yield got, want, None, None
    vec.close()
    vec.close()
    ref.close()


def test_observations_equal_the_eval_paths_pong_42():
    """Pong at 42×42 (the shipped frame size): 400 steps of the same actions give the same frames, stack and
    rewards as the game adapter through envs.make (ALE's resize equals Gymnasium's cv2 INTER_AREA: max
    diff 0)."""
    it = _lockstep("Pong", 400, 6, frame_size=42, clip_rewards=True)
    obs, o, _, _ = next(it)
    assert obs.shape == (2, 4, 42, 42) and obs.dtype == np.uint8
    assert np.array_equal(obs[0], o) and np.array_equal(obs[1], o)  # the reset stack: 4 × the reset frame
    rewards = 0
    for (vobs, vrew, vdone, _), want, _, _ in it:
        o, r, term, trunc = want[:4]
        assert int(np.abs(vobs[0].astype(int) - o.astype(int)).max()) == 0
        assert vrew[0] == r and vdone[0] == (term or trunc)
        rewards += r != 0
    assert rewards >= 3  # points were scored, so the comparison covered play, not a static screen


def test_episode_ends_match_with_terminal_observation_and_monitor_stats():
    """Breakout with episodic_life: a life loss ends the episode in both; SB3's terminal_observation is the
    adapter's last frame, the next observation its reset stack, and info["episode"] counts as Monitor does."""
    it = _lockstep("Breakout", 300, 4, frame_size=84, episodic_life=True)
    next(it)
    ends, ret, length = 0, 0.0, 0
    for (vobs, vrew, vdone, infos), want, _, _ in it:
        o, r = want[0], want[1]
        assert np.array_equal(vobs[0], o) and vrew[0] == r
        ret, length = ret + r, length + 1
        assert LATENCY_KEY in infos[0] and FAULT_KEY not in infos[0]
        if vdone[0]:
            ends += 1
            assert want[2] or want[3]
            assert np.array_equal(infos[0]["terminal_observation"], want[4])
            assert infos[0]["episode"]["r"] == ret and infos[0]["episode"]["l"] == length
            assert infos[0]["TimeLimit.truncated"] is False
            ret, length = 0.0, 0
        else:
            assert "terminal_observation" not in infos[0] and "episode" not in infos[0]
    assert ends >= 3


def test_seeds_follow_dummy_vec_env_and_max_episode_steps():
    """seed(s) seeds env i with s + i (sticky actions and no-op resets make the seed visible); the time limit
    truncates with TimeLimit.truncated and a fresh reset stack."""
    a = AleVecEnv(3, game="Pong", frame_size=42, sticky_actions=True, max_episode_steps=40)
    b = AleVecEnv(1, game="Pong", frame_size=42, sticky_actions=True, max_episode_steps=40)
    a.seed(7)
    b.seed(8)
    oa, ob = a.reset(), b.reset()
    assert np.array_equal(oa[1], ob[0])
    rng = np.random.default_rng(1)
    for _ in range(40):
        acts = rng.integers(6, size=3)
        oa, _, da, ia = a.step(acts)
        ob, _, db, ib = b.step(acts[1:2])
        assert np.array_equal(ia[1].get("terminal_observation", oa[1]),
                              ib[0].get("terminal_observation", ob[0]))
    assert da.all() and db.all() and all(i["TimeLimit.truncated"] for i in ia)
    assert all(i["episode"]["l"] == 40 for i in ia)
    assert all(len({int(f.sum()) for f in o}) == 1 for o in oa)  # each a fresh stack of 4 × one frame
    a.close()
    b.close()


def test_bad_rows_get_the_guards_decision():
    """The batched check vouches for valid rows; a row it does not (out of the declared bounds, a NaN reward)
    goes through the Guard's policies and faults, for that env only."""
    vec = AleVecEnv(2, game="Pong", frame_size=42, nan_policy="truncate")
    vec.reset()
    vec.guard.space = spaces.Box(0, 200, vec.observation_space.shape, np.uint8)
    from envs.value_checks import RowCheck

    vec.guard.rows = RowCheck(vec.guard.space)
    vec._validate = vec.guard.validate
    obs = np.full((2, 4, 42, 42), 100, dtype=np.uint8)
    obs[1, 0, 0, 0] = 255
    rewards, term, trunc = (np.array([0.0, 1.0], dtype=np.float32), np.zeros(2, dtype=bool),
                            np.zeros(2, dtype=bool))
    infos: list[dict] = [{}, {}]
    cut = vec._validate(obs, rewards, term, trunc, infos)
    assert not cut.any() and obs[1, 0, 0, 0] == 200  # bounds_policy clip: clipped, recorded, the step goes on
    assert faults_in(infos[0]) == [] and faults_in(infos[1])[0].clipped
    rewards[0] = np.nan
    # the game also ended on both rows: the cut row becomes a truncation, as the Guard returns it
    term[:] = True
    infos = [{}, {}]
    cut = vec._validate(np.full((2, 4, 42, 42), 9, dtype=np.uint8), rewards, term, trunc, infos)
    assert cut.tolist() == [True, False] and trunc.tolist() == [True, False] and rewards[0] == 0.0
    assert term.tolist() == [False, True]
    assert faults_in(infos[0])[0].kind.value == "nonfinite" and faults_in(infos[1]) == []
    vec.close()


def test_train_with_ale_vec_env_then_evaluate(tmp_path):
    """train.py --set train.vec_env=ale trains, checkpoints, logs the dummy path's scalars;
    evaluate.py runs."""
    run = tmp_path / "run"
    run_cli("train.py", "--env", "game", "--timesteps", "1024", "--seed", "0", "--run-dir", str(run),
            "--quiet", "--num-envs", "4", "--set", "eval.every=0", "--set", "train.vec_env=ale",
            "--set", "env.game=Breakout", "--set", "env.crop=null", timeout=600, check=True)
    assert list((run / "final").glob("*.safetensors"))
    assert "vec_env: ale" in (run / "config.yaml").read_text()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in run.rglob("events.out.tfevents.*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"rollout/ep_rew_mean", "rollout/ep_len_mean", "env/step_latency_ms_p50"} <= tags, tags
    out = tmp_path / "e.json"
    run_cli("evaluate.py", str(run), "--episodes", "1", "--json", str(out), timeout=600, check=True)
    assert out.stat().st_size > 0


@pytest.mark.parametrize("args, expected", [
    (("--env", "robot"), "train.vec_env: ale is ALE's own vector env, for --env game on the sb3 backend; "
                         "got env 'robot'"),
    (("--env", "game", "--backend", "rllib"), "for --env game on the sb3 backend; got env 'game' on rllib"),
    (("--env", "game", "--set", "env.crop=[34,194]"),
     "train.vec_env: ale cannot crop frames (env.crop is [34, 194])"),
], ids=["not-game", "rllib", "crop"])
def test_ale_vec_env_elsewhere_exits_2(tmp_path, args, expected):
    proc = run_cli("train.py", *args, "--set", "train.vec_env=ale", "--timesteps", "64", "--run-dir",
                   str(tmp_path / "r"))
    assert proc.returncode == 2, proc.stderr
    assert expected in proc.stderr and "train.vec_env: dummy" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
