"""Self-play on --backend rllib (issue 31 §4): connect four against the league with the local env runner
(``rllib.num_env_runners: 0``), the league in the run dir, its ratings in TensorBoard under the SB3 run's
names, ``--resume`` restoring the league of the checkpoint's step, ``evaluate.py --opponent``; and the
game counts' round trip through RLlib's own metrics logger, without Ray.

The trainers join the session's shared Ray (``shared_ray`` in tests/conftest.py).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli
from test_cli import scalars

from agents.rllib.selfplay import games_from_metrics, log_game
from envs.selfplay import GAME_KEY, GameResult

C4 = "pettingzoo.classic.connect_four_v3:env"
COMMON = ["--env", C4, "--backend", "rllib", "--num-env-runners", "0", "--num-envs", "4", "--quiet",
          "--set", "agent.n_steps=64", "--set", "agent.batch_size=128", "--set", "eval.every=0"]


def states(run):
    """The league's saved states, by step."""
    return {int(re.search(r"\d+", p.name).group()): json.loads(p.read_text())
            for p in (run / "league").glob("state_*.json")}


def members(state):
    return {m["name"]: m for m in state["members"]}


def win_rate(out: str) -> float:
    """The trained policy's success column (games won) of evaluate.py's table."""
    return float(next(line for line in out.splitlines() if line.startswith("trained")).split()[-1])


@pytest.fixture(scope="module")
def c4_run(shared_ray, tmp_path_factory):
    """1,024 steps of self-play: a snapshot and a checkpoint every 512 steps (RLlib's iterations of 256
    steps overshoot each mark by a few steps)."""
    run = tmp_path_factory.mktemp("rllib_c4") / "run"
    run_cli("train.py", *COMMON, "--timesteps", "1024", "--seed", "1", "--run-dir", str(run),
            "--set", "selfplay.snapshot_every=512", "--set", "train.checkpoint_every=512",
            *shared_ray.flags, env=shared_ray.env, check=True)
    return run


@pytest.mark.ray
def test_rllib_self_play_writes_the_league_and_its_ratings(c4_run):
    snaps = sorted((c4_run / "league").glob("step_*.safetensors"))
    assert len(snaps) == 2, snaps  # one per 512 steps: ordinary checkpoints of the RLlib module
    saved = states(c4_run)
    final = saved[max(saved)]
    names = members(final)
    assert set(names) == {"random", snaps[0].stem, snaps[1].stem}
    assert names["random"]["rating"] == 1000.0 and names["random"]["games"] > 20  # games before a snapshot
    assert names[snaps[0].stem]["games"] > 10  # the env runner's games reached the league's ratings
    ratings = scalars(c4_run, "league/rating")  # the SB3 run's TensorBoard names, read back
    assert len(ratings) >= 4 and abs(ratings[-1][1] - final["rating"]) < 1e-3
    assert [v for _, v in scalars(c4_run, "league/snapshots")][-1] == 2.0
    assert scalars(c4_run, f"league/rating/{snaps[0].stem}")


def _pit(run, opponent: str) -> str:
    """evaluate.py's output for 4 games against ``opponent``: it exits 0 and plays both seats."""
    out = run_cli("evaluate.py", str(run), "--episodes", "4", "--opponent", opponent, timeout=120)
    assert out.returncode == 0, out.stderr
    seats = dict(re.findall(r"^won/(\w+)_seat\s+trained\s+(\S+)", out.stdout, re.M))
    assert set(seats) == {"first", "second"}, out.stdout  # two games from each seat
    return out.stdout


@pytest.mark.ray
def test_evaluate_pits_an_rllib_run_against_its_own_snapshot(c4_run):
    snap = sorted((c4_run / "league").glob("step_*.safetensors"))[0]
    _pit(c4_run, str(snap))  # an RLlib checkpoint as the opponent, loaded without Ray


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_pits_an_rllib_run_against_the_scripted_opponents(c4_run):
    for opponent in ("random", "lookahead"):
        _pit(c4_run, opponent)
    bad = run_cli("evaluate.py", str(c4_run), "--opponent", str(c4_run / "nope.safetensors"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.ray
@pytest.mark.slow  # CI resumes on a remote env runner instead (the next test): the same restore, and more
def test_resume_restores_the_league_of_the_checkpoint_step(c4_run, tmp_path, shared_ray):
    run = tmp_path / "run"
    shutil.copytree(c4_run, run)
    shutil.rmtree(run / "final")  # as if killed after the checkpoint: the resume starts from its step
    ckpt = int(re.search(r"\d+", next((run / "checkpoints").glob("step_*.safetensors")).name).group())
    at_ckpt = states(run)[ckpt]
    assert len(at_ckpt["members"]) == 2 and max(states(run)) > ckpt  # the final league holds one more
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "256", "--quiet", *shared_ray.flags,
                   env=shared_ray.env, check=True)
    assert f"at step {ckpt:,}" in proc.stdout and "not an exact resume" not in proc.stdout
    after = states(run)
    end = max(s for s in after if s < ckpt + 512)  # the resumed run's last state (before any snapshot)
    assert end > ckpt
    old, new = members(at_ckpt), members(after[end])
    assert set(new) == set(old)  # the checkpoint's league, not the final one it was copied beside
    assert all(new[n]["games"] > old[n]["games"] for n in old)  # and it went on playing both members
    assert all(new[n]["step"] == old[n]["step"] for n in old)


def test_game_counts_round_trip_through_rllibs_metrics_logger():
    from ray.rllib.utils.metrics.metrics_logger import MetricsLogger

    logger = MetricsLogger()
    games = [GameResult("random", 1.0, "first"), GameResult("step_000001024", 0.5, "second"),
             GameResult("random", 1.0, "first"), GameResult("random", 0.0, "second")]
    for game in games:
        log_game({GAME_KEY: game, "other": 1}, logger)
    log_game({"no game": True}, logger)  # an episode step that ends no game counts nothing
    got = games_from_metrics(logger.reduce(compile=True)["nondiff"])
    assert sorted(got, key=repr) == sorted(games, key=repr)
    logger.log_value(("nondiff", "restarts"), 1, reduce="sum")
    assert games_from_metrics(logger.reduce(compile=True)["nondiff"]) == []  # counted once: NaN after


@pytest.mark.ray
@pytest.mark.slow
def test_rllib_self_play_alone_learns_to_beat_random(tmp_path, shared_ray):
    run = tmp_path / "run"
    run_cli("train.py", *COMMON, "--timesteps", "8192", "--seed", "2", "--run-dir", str(run),
            "--set", "agent.n_steps=128", "--set", "selfplay.snapshot_every=1024", *shared_ray.flags,
            env=shared_ray.env, check=True)
    out = run_cli("evaluate.py", str(run), "--episodes", "40", check=True).stdout
    # trained against its past selves only (random plays the first 1,024 steps); seeds 2 and 3 won 0.80 and
    # 0.82 of 40 games after 6k steps, random itself 0.42
    assert win_rate(out) >= 0.7, out


@pytest.mark.ray
@pytest.mark.slow
def test_a_checkpoint_of_the_other_backend_plays_as_an_opponent(c4_run, tmp_path):
    sb3 = tmp_path / "sb3"
    run_cli("train.py", "--env", C4, "--num-envs", "2", "--set", "agent.n_steps=64", "--set",
            "agent.batch_size=64", "--timesteps", "128", "--set", "eval.every=0", "--quiet", "--run-dir",
            str(sb3), check=True)
    _pit(c4_run, str(sb3 / "final" / "model.safetensors"))  # SB3's board planes in an RLlib run
    _pit(sb3, str(sorted((c4_run / "league").glob("step_*.safetensors"))[0]))  # RLlib's flat board in SB3's
    # a checkpoint from elsewhere whose config names code to import: its network is built, nothing imported
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(sb3 / "final" / "model.safetensors"), "pt") as f:
        names = f.keys()  # a safetensors file: not iterable itself
        tensors, meta = {k: f.get_tensor(k) for k in names}, json.loads(f.metadata()["nondiff"])
    meta["config"]["env"]["packages"] = ["nondiff_test_no_such_package"]
    meta["config"]["env"]["wrappers"] = ["nondiff_test_no_such_module:Evil"]
    planted = tmp_path / "planted.safetensors"
    save_file(tensors, str(planted), metadata={"nondiff": json.dumps(meta)})
    _pit(c4_run, str(planted))



def _edit(run, **settings: str) -> None:
    """Change settings of the run's config.yaml (``key: old`` -> ``key: new``; the resume then needs
    ``--trust-run-dir``: the config is no longer the one train.py signed)."""
    path = run / "config.yaml"
    text = path.read_text()
    for key, change in settings.items():
        old, new = change.split("->")
        assert f"{key}: {old}\n" in text, key
        text = text.replace(f"{key}: {old}\n", f"{key}: {new}\n")
    path.write_text(text)


@pytest.mark.ray
def test_resume_on_a_remote_env_runner_sends_it_the_league(c4_run, tmp_path, shared_ray):
    """``rllib.num_env_runners: 1``: the league of the checkpoint, restored in the driver, reaches the remote
    env runner (its snapshot's bytes sent by value), and so does a snapshot taken after the resume; the
    ratings and their TensorBoard names are the driver's league's, as with the local env runner."""
    run = tmp_path / "run"
    shutil.copytree(c4_run, run)
    shutil.rmtree(run / "final")  # as if killed after the checkpoint: the resume starts from its step
    _edit(run, num_env_runners="0->1", snapshot_every="512->256")
    ckpt = int(re.search(r"\d+", next((run / "checkpoints").glob("step_*.safetensors")).name).group())
    for step in [s for s in states(run) if s > ckpt]:  # the final league, written with final/
        (run / "league" / f"state_{step:09d}.json").unlink()
    at_ckpt = states(run)[ckpt]
    assert len(at_ckpt["members"]) == 2
    proc = run_cli("train.py", "--resume", str(run), "--timesteps", "512", "--trust-run-dir", "--quiet",
                   *shared_ray.flags, env=shared_ray.env, check=True)
    assert f"at step {ckpt:,}" in proc.stdout and "not an exact resume" not in proc.stdout
    after = states(run)
    old, new = members(at_ckpt), members(after[max(after)])
    taken = sorted(n for n, m in new.items() if (m["step"] or 0) > ckpt)  # after 256 steps, and at the end
    assert len(taken) == 2 and set(new) == {*old, *taken}  # the checkpoint's league, and the snapshots taken
    assert all(new[n]["games"] > old[n]["games"] for n in old)  # the restored snapshot played on the runner
    assert all(new[n]["step"] == old[n]["step"] for n in old)
    assert new[taken[0]]["games"] > 0  # and the snapshot taken after the resume, sent once it was taken
    ratings = scalars(run, "league/rating")
    assert ratings[-1][0] > ckpt and abs(ratings[-1][1] - after[max(after)]["rating"]) < 1e-3
    assert scalars(run, f"league/rating/{taken[0]}")


def _private_mounts() -> bool:
    """Whether this user may give a process a mount namespace of its own (``unshare -m``)."""
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-m", "--map-root-user", "true"], capture_output=True).returncode == 0


@pytest.mark.ray
@pytest.mark.slow
def test_remote_runners_on_another_node_never_read_the_drivers_disk(c4_run, tmp_path):
    """Two env runners on a node of their own (ray.cluster_utils.Cluster, a head without CPUs), and the
    driver's run dir and fixed opponent's checkpoint on a tmpfs that only the driver's mount namespace sees:
    the runners play the snapshots and the checkpoint from the bytes the driver sends them."""
    from ray.cluster_utils import Cluster

    if not _private_mounts():
        pytest.skip("needs `unshare -m --map-root-user` (a private mount namespace for the driver)")
    private, out = tmp_path / "private", tmp_path / "out"
    private.mkdir()
    snapshot = sorted((c4_run / "league").glob("step_*.safetensors"))[0]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    train = [sys.executable, "train.py", *COMMON[:4], "--num-env-runners", "2", *COMMON[6:],
             "--ray-address", cluster.address, "--timesteps", "1024", "--seed", "3", "--run-dir",
             f"{private}/run", "--set", "selfplay.snapshot_every=256", "--set", "selfplay.fixed_share=0.4",
             "--set", f"selfplay.fixed=[random,{private}/opponent.safetensors]"]
    script = (f"mount -t tmpfs tmpfs {private} && cp {snapshot} {private}/opponent.safetensors && "
              f"{shlex.join(train)} && cp -r {private}/run {out}")
    try:
        proc = subprocess.run(["unshare", "-m", "--map-root-user", "sh", "-c", script], cwd=ROOT,
                              capture_output=True, text=True, timeout=600)
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not list(private.iterdir())  # the run dir was never where the runners could see it
    final = members(states(out)[max(states(out))])
    snaps = sorted(n for n, m in final.items() if m["step"] is not None)
    assert len(snaps) == 4 and all(final[n]["games"] > 0 for n in snaps[:-1])  # snapshots, sent by value
    assert final["opponent"]["games"] > 0 and final["random"]["games"] > 0  # the fixed checkpoint too
    assert scalars(out, "league/score_vs/opponent")


@pytest.mark.ray  # the c4_run fixture's checkpoint; the replica itself needs no Ray
def test_a_replica_draws_only_what_it_holds_and_asks_for_the_rest(c4_run):
    """A remote runner's replica (agents/rllib/league_remote.py): a member whose bytes it lacks (a restarted
    runner) is left out of the draw and named back; once sent, the snapshot plays as a policy; the draw is
    the League's, from an RNG of the run seed and the runner's index."""
    import yaml

    from agents.config import validate
    from agents.rllib.league_remote import LeagueUpdate, Replica
    from agents.run import checkpoint
    from agents.run.resolved import resolve_env
    from agents.run.selfplay.league import Member
    from agents.run.selfplay.opponents import PolicyOpponent, foreign_view

    snap = sorted((c4_run / "league").glob("step_*.safetensors"))[0]
    cfg = validate(yaml.safe_load((c4_run / "config.yaml").read_text()), "test")
    env = resolve_env(cfg, False, spaces=checkpoint.load(snap).header.spaces())
    league = (Member("random", games=5), Member(snap.stem, step=512))

    def replica(index: int) -> Replica:
        return Replica(cfg, env, 1, index, foreign_view(cfg, env))

    first = replica(1)
    assert first.update(LeagueUpdate(1, league, (snap.stem,), {})) == [snap.stem]
    assert {first.league.draw().name for _ in range(20)} == {"random"}  # never the missing snapshot
    assert first.update(LeagueUpdate(1, league, (snap.stem,), {snap.stem: snap.read_bytes()})) == []
    drawn = [first.league.draw() for _ in range(40)]
    assert {o.name for o in drawn} == {"random", snap.stem}
    assert isinstance(next(o for o in drawn if o.name == snap.stem), PolicyOpponent)

    def draws(index: int) -> list[str]:
        fresh = replica(index)
        fresh.update(LeagueUpdate(1, league, (snap.stem,), {snap.stem: snap.read_bytes()}))
        return [fresh.league.draw().name for _ in range(40)]
    assert draws(1) == draws(1) != draws(2)  # seeded by (run seed, runner index)


@pytest.mark.ray  # the c4_run fixture's checkpoint; apply_update itself needs no Ray
def test_a_remote_runners_seats_take_the_leagues_seat_and_openings(c4_run):
    """apply_update hands a remote runner's envs the league's draw *and* the ``selfplay:`` section's seat and
    random openings, as the driver's own envs get them (``selfplay.seat`` was ignored on remote runners)."""
    from types import SimpleNamespace

    import yaml
    from pettingzoo.classic import connect_four_v3

    from agents.config import validate
    from agents.rllib.league_remote import LeagueUpdate, apply_update
    from agents.run import checkpoint
    from agents.run.resolved import resolve_env
    from agents.run.selfplay.league import Member
    from envs.selfplay import SeatEnv

    raw = yaml.safe_load((c4_run / "config.yaml").read_text())
    raw["selfplay"] = {**raw.get("selfplay", {}), "seat": "second", "opening_moves": 3}
    cfg = validate(raw, "test")
    snap = sorted((c4_run / "league").glob("step_*.safetensors"))[0]
    env = resolve_env(cfg, False, spaces=checkpoint.load(snap).header.spaces())
    seat = SeatEnv(connect_four_v3.env(), C4)
    env_config = {"cfg": cfg.model_dump(mode="json"), "env": env}
    runner = SimpleNamespace(env=SimpleNamespace(unwrapped=SimpleNamespace(envs=[seat])), worker_index=1,
                             config=SimpleNamespace(env_config=env_config))
    apply_update(runner, LeagueUpdate(1, (Member("random", games=0),), (), {}))
    assert (seat.seat, seat.opening) == ("second", 3)
    for g in range(6):
        seat.reset(seed=g)
        assert seat.learner == "player_1" and seat.opponent.name == "random"
