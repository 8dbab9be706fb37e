"""nondiff's ``train.py --optimize`` against RL Baselines3 Zoo's ``--optimize``, side by side (issue 30).

Per env, both tools run a study with the same algorithm (``--algo``: PPO or A2C), the same per-run budget
(``--timesteps``, RL Zoo's ``-n``), the same number of trials, TPE sampler (the same number of random startup
trials) and median pruner, the same number of evaluations per trial and of episodes per evaluation, and the
same study seed. nondiff trains ``--seeds-per-trial`` seeded runs per trial and scores their mean; RL Zoo
trains one unseeded run per trial (its ``TODO: eval each hyperparams several times``). Each tool keeps its own
defaults otherwise: nondiff's default space of the algorithm fitted to the budget and its default config; RL
Zoo's ``sample_<algo>_params`` over its ``hyperparams/<algo>.yml`` entry for the env (``n_envs``,
``normalize``). The env steps each study spent are counted (nondiff: each run's final checkpoint; RL Zoo: a
complete trial trains whole rollouts of ``n_steps × n_envs``, PPO and A2C alike, a pruned one stops at its
last evaluation).

Then each tool's best trial is retrained by that tool on the same fresh seeds for the same budget
(``train.py --config STUDY/best.yaml --seed S``; ``python -m rl_zoo3.train ... --seed S -params <best>``),
and every final policy is scored the same way: deterministic actions on ``--episodes`` episodes seeded
10,000, 10,001, ... (nondiff: ``evaluate.py RUN --json``; RL Zoo's ``.zip``: :data:`ZOO_HELPER` in the zoo
venv, which applies the run's saved ``VecNormalize`` statistics where RL Zoo trained with them). RL Zoo runs
in its own venv (``--zoo-python``), never imported here::

    python benchmarks/experiments/rlzoo_compare.py --zoo-python /tmp/zoo/bin/python [--algo ppo|a2c] \\
        [--envs CartPole-v1 Acrobot-v1] [--trials 12] [--timesteps 20000] [--seeds-per-trial 2] \\
        [--evaluations 4] [--eval-episodes 10] [--study-seed 11] [--retrain-seeds 100 101 102 103 104] \\
        [--episodes 100] [--jobs 1] [--work /tmp/rlzoo_compare] [--json docs/rlzoo_compare.json]

A step whose output is already in ``--work`` is not run again (a rerun after a crash continues). The second
attempt (docs/results.md) gives nondiff a config whose ``search:`` widens PPO's space (``--nondiff-config``),
reuses the first attempt's RL Zoo arm (``--zoo-work``) and adds its result to the JSON under its own key::

    python benchmarks/experiments/rlzoo_compare.py --zoo-python /tmp/zoo/bin/python --jobs 2 \\
        --nondiff-config benchmarks/experiments/rlzoo_wide.yaml --seeds-per-trial 3 \\
        --work /tmp/rlzoo_wide --zoo-work /tmp/rlzoo_compare --json-key second_attempt

The A2C comparison (``--algo a2c``) gives nondiff the A2C keys of its own defaults in a file
(benchmarks/experiments/rlzoo_a2c.yaml), because ``train.py --algo a2c`` on a Gymnasium id without a config
file exits 2::

    python benchmarks/experiments/rlzoo_compare.py --zoo-python /tmp/zoo/bin/python --algo a2c \\
        --nondiff-config benchmarks/experiments/rlzoo_a2c.yaml --seeds-per-trial 3 --work /tmp/rlz_a2c \\
        --json-key a2c
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
EVAL_SEED = 10_000
ENV1 = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
ZOO_HELPER = r'''
import glob, json, math, os, sys
import numpy as np

def best(log, opt_dir, n, env_id, algo):
    # RL Zoo prints every trial, then the best, then writes its report with pandas, which rl-zoo3 does not
    # install: its --optimize ends in ModuleNotFoundError there and the report is lost. Read what it printed.
    import ast, re, rl_zoo3, yaml
    with open(os.path.join(os.path.dirname(rl_zoo3.__file__), "hyperparams", algo + ".yml")) as f:
        hp = yaml.load(f, Loader=yaml.UnsafeLoader)[env_id]  # RL Zoo's own file, read as RL Zoo reads it
    n_envs = int(hp.get("n_envs", 1))
    with open(log) as f:
        text = f.read()
    end = text.index("Number of finished trials")
    text = text[text.rindex("A new study created", 0, end):end]  # the study that finished
    trials, steps, best_no = [], 0, None
    for m in re.finditer(r"Trial (\d+) (finished with value: (\S+) and parameters: (\{.*?\})\. "
                         r"Best is trial (\d+)|pruned)", text):
        number = int(m.group(1))
        npz = os.path.join(opt_dir, f"trial_{number}", "evaluations.npz")
        if m.group(2) == "pruned":
            state, value, params = "PRUNED", None, None
            used = int(np.load(npz)["timesteps"][-1]) if os.path.isfile(npz) else 0
        else:
            state, value, params = "COMPLETE", float(m.group(3)), ast.literal_eval(m.group(4))
            best_no = int(m.group(5))
            roll = params["n_steps"] if "n_steps" in params else 2 ** params["n_steps_pow"]  # A2C, PPO
            used = math.ceil(n / (roll * n_envs)) * roll * n_envs  # both train whole rollouts
        steps += used
        trials.append({"number": number, "state": state, "value": value, "params": params, "env_steps": used})
    b = next(t for t in trials if t["number"] == best_no)
    print(json.dumps({"n_envs": n_envs, "normalize": hp.get("normalize", False), "best": best_no,
                      "value": b["value"], "params": b["params"], "trials": trials, "env_steps": steps}))


def score(run, env_id, episodes, seed, algo):
    import gymnasium as gym
    import stable_baselines3
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
    zips = glob.glob(os.path.join(run, algo, "*_1", f"{env_id}.zip"))
    model = getattr(stable_baselines3, algo.upper()).load(zips[0], device="cpu")
    stats = os.path.join(os.path.dirname(zips[0]), env_id, "vecnormalize.pkl")
    norm = None
    if os.path.isfile(stats):
        norm = VecNormalize.load(stats, DummyVecEnv([lambda: gym.make(env_id)]))
    env = gym.make(env_id)
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        total, done = 0.0, False
        while not done:
            o = norm.normalize_obs(obs) if norm is not None else obs
            action, _ = model.predict(o, deterministic=True)
            obs, r, term, trunc, _ = env.step(action)
            total += float(r)
            done = term or trunc
        returns.append(total)
    print(json.dumps({"returns": returns, "normalized_obs": norm is not None}))

if sys.argv[1] == "best":
    best(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
else:
    score(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
'''
"""Runs in the zoo venv: ``best STUDY_LOG OPT_LOG_DIR N ENV ALGO`` (the study's best trial and env steps)
and ``score LOG_DIR ENV EPISODES SEED ALGO`` (a retrained model's returns on seeded episodes)."""


def load() -> float:
    """The 1-minute load average."""
    return round(os.getloadavg()[0], 2)


def run(cmd: list[str], log: Path, check: bool = True) -> float:
    """Run ``cmd`` (torch and BLAS on one thread, niced) with its output in ``log``; its wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with open(log, "ab") as out:
        rc = subprocess.call(["nice", "-n", "10", *cmd], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                             env=ENV1)
    if rc != 0 and check:
        raise SystemExit(f"failed (exit {rc}): {' '.join(cmd)}; see {log}")
    return round(time.monotonic() - t0, 1)


def timed(what: dict[str, Any], cmd: list[str], log: Path, check: bool = True) -> None:
    """Run ``cmd``, recording its wall time and the load before and after into ``what``."""
    what["load_before"] = load()
    what["wall_s"] = run(cmd, log, check)
    what["load_after"] = load()


def nondiff_study(a: argparse.Namespace, env: str, d: Path) -> dict[str, Any]:
    """nondiff's study of ``env`` in ``d``: its trials, best score and the env steps all its runs took."""
    from agents.run.checkpoint import read_header
    from agents.search.trial import read_evaluations

    out: dict[str, Any] = {}
    if len(_rows(d)) < a.trials:  # best.yaml and trials.csv are rewritten after every trial
        config = ["--config", a.nondiff_config] if a.nondiff_config else []
        timed(out, [sys.executable, "train.py", "--env", env, *config, "--algo", a.algo, "--optimize",
                    "--trials", str(a.trials), "--seeds-per-trial", str(a.seeds_per_trial),
                    "--timesteps", str(a.timesteps),
                    "--evaluations", str(a.evaluations), "--sampler", "tpe", "--pruner", "median",
                    "--jobs", "1", "--seed", str(a.study_seed), "--study-dir", str(d),
                    "--set", f"eval.episodes={a.eval_episodes}", "--quiet"], d.parent / "nondiff-study.log")
    rows = _rows(d)
    steps = 0
    for run_dir in sorted(d.glob("trial-*/seed-*")):
        if not run_dir.is_dir():
            continue
        final = run_dir / "final" / "model.safetensors"
        evals = read_evaluations(run_dir)
        steps += read_header(final).num_timesteps if final.is_file() else (evals[-1]["step"] if evals else 0)
    states = [r.get("state", "") for r in rows]
    wall = (d / "trials.csv").stat().st_mtime - (d / "study.yaml").stat().st_mtime
    out.update(study_wall_s=round(wall, 1), trials=len(rows), complete=states.count("complete"),
               pruned=states.count("pruned"), env_steps=steps, best_row=rows[0] if rows else None)
    return out


def _rows(study: Path) -> list[dict[str, str]]:
    """The finished trials in a nondiff study's ``trials.csv`` (none when it has none yet)."""
    if not (study / "trials.csv").is_file():
        return []
    with open(study / "trials.csv") as f:
        return [r for r in csv.DictReader(f) if r.get("state") in ("complete", "pruned")]


def zoo_study(a: argparse.Namespace, env: str, d: Path) -> dict[str, Any]:
    """RL Zoo's study of ``env`` in ``d``: its trials, best params and the env steps its trials took."""
    out: dict[str, Any] = {}
    log = d.parent / "zoo-study.log"
    if not log.is_file() or "Number of finished trials" not in log.read_text():
        timed(out, [a.zoo_python, "-m", "rl_zoo3.train", "--algo", a.algo, "--env", env,
                    "-n", str(a.timesteps), "-optimize", "--n-trials", str(a.trials), "--n-jobs", "1",
                    "--sampler", "tpe", "--pruner", "median", "--n-startup-trials", str(startup(a.trials)),
                    "--n-evaluations", str(a.evaluations), "--eval-episodes", str(a.eval_episodes),
                    "--seed", str(a.study_seed), "-f", str(d), "--optimization-log-path", str(d / "trials"),
                    "--no-optim-plots", "--num-threads", "1", "--vec-env", "dummy"], log, check=False)
    res = subprocess.run([a.zoo_python, "-c", ZOO_HELPER, "best", str(log), str(d / "trials"),
                          str(a.timesteps), env, a.algo], capture_output=True, text=True, check=True,
                         env=ENV1)
    info = json.loads(res.stdout.strip().splitlines()[-1])
    states = [t["state"] for t in info["trials"]]
    wall = _zoo_wall(log.read_text())
    out.update(study_wall_s=round(wall, 1), trials=len(states), complete=states.count("COMPLETE"),
               pruned=states.count("PRUNED"), env_steps=info["env_steps"], best_trial=info["best"],
               best_value=info["value"], best_params=info["params"], n_envs=info["n_envs"],
               normalize=info["normalize"], trial_table=info["trials"])
    return out


def _zoo_wall(text: str) -> float:
    """Seconds from Optuna's "A new study created" line to the last trial's line of the finished study."""
    def stamp(line: str) -> float:  # "[I 2026-12-06 08:58:49,736] ..."
        day, _, ms = line[3:line.index("]")].partition(",")
        return time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000

    lines = text[:text.index("Number of finished trials")].splitlines()
    first = max(i for i, line in enumerate(lines) if "A new study created" in line)
    stamped = [line for line in lines[first:] if line.startswith("[I ")]
    return stamp(stamped[-1]) - stamp(stamped[0])


def startup(trials: int) -> int:
    """nondiff's TPE startup trials for a study of ``trials`` (agents/search/study.py), given to RL Zoo."""
    return min(10, max(1, trials // 3))


def zoo_params(p: dict[str, Any]) -> list[str]:
    """RL Zoo's ``-params`` for a trial's sampled values, converted as ``convert_onpolicy_params`` does
    (``sample_ppo_params`` samples ``n_steps_pow``, ``batch_size_pow``, ``clip_range`` and ``n_epochs``;
    ``sample_a2c_params`` samples ``n_steps`` itself and none of the others)."""
    arch = {"tiny": "[64]", "small": "[64, 64]", "medium": "[256, 256]"}[p["net_arch"]]
    act = {"tanh": "nn.Tanh", "relu": "nn.ReLU"}[p["activation_fn"]]
    vals = {"n_steps": p["n_steps"] if "n_steps" in p else 2 ** p["n_steps_pow"],
            "gamma": 1 - p["one_minus_gamma"], "gae_lambda": 1 - p["one_minus_gae_lambda"],
            "learning_rate": p["learning_rate"], "ent_coef": p["ent_coef"],
            "max_grad_norm": p["max_grad_norm"]}
    if "batch_size_pow" in p:  # PPO
        vals.update(batch_size=2 ** p["batch_size_pow"], clip_range=p["clip_range"], n_epochs=p["n_epochs"])
    return [f"{k}:{v!r}" for k, v in vals.items()] + [
        f"policy_kwargs:dict(net_arch=dict(pi={arch}, vf={arch}), activation_fn={act})"]


def nondiff_retrain(a: argparse.Namespace, env: str, study: Path, d: Path, seed: int) -> dict[str, Any]:
    """Train nondiff's ``best.yaml`` with ``seed`` and score it with ``evaluate.py``."""
    run_dir, out = d / f"seed-{seed}", dict[str, Any](seed=seed)
    if not (run_dir / "final").is_dir():
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of an interrupted comparison
        timed(out, [sys.executable, "train.py", "--config", str(study / "best.yaml"), "--seed", str(seed),
                    "--run-dir", str(run_dir), "--quiet"], d / f"seed-{seed}.log")
    js = d / f"seed-{seed}.eval.json"
    if not js.is_file():
        run([sys.executable, "evaluate.py", str(run_dir), "--episodes", str(a.episodes), "--seed",
             str(EVAL_SEED), "--json", str(js)], d / f"seed-{seed}.eval.log")
    report = json.loads(js.read_text())  # evaluate.py --json: the trained policy's figures at the top level
    out.update(mean=report["mean_return"], std=report["std_return"], random_mean=report["random_mean_return"])
    return out


def zoo_retrain(a: argparse.Namespace, env: str, params: list[str], d: Path, seed: int) -> dict[str, Any]:
    """Train RL Zoo's best params with ``seed`` (RL Zoo's train) and score the final model."""
    run_dir, out = d / f"seed-{seed}", dict[str, Any](seed=seed)
    if not glob.glob(str(run_dir / a.algo / "*_1" / f"{env}.zip")):
        shutil.rmtree(run_dir, ignore_errors=True)  # an unfinished run of an interrupted comparison
        timed(out, [a.zoo_python, "-m", "rl_zoo3.train", "--algo", a.algo, "--env", env,
                    "-n", str(a.timesteps), "--seed", str(seed), "-f", str(run_dir), "--eval-freq", "-1",
                    "--num-threads", "1", "--vec-env", "dummy", "--verbose", "0", "-params", *params],
              d / f"seed-{seed}.log")
    js = d / f"seed-{seed}.eval.json"
    if not js.is_file():
        res = subprocess.run([a.zoo_python, "-c", ZOO_HELPER, "score", str(run_dir), env, str(a.episodes),
                              str(EVAL_SEED), a.algo], capture_output=True, text=True, check=True, env=ENV1)
        js.write_text(res.stdout.strip().splitlines()[-1])
    returns = json.loads(js.read_text())["returns"]
    out.update(mean=statistics.fmean(returns), std=statistics.pstdev(returns))
    return out


def spread(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """Mean, std (over seeds, ddof 0), min and max of the per-seed mean returns."""
    means = [r["mean"] for r in per_seed]
    return {"mean": statistics.fmean(means), "std": statistics.pstdev(means), "min": min(means),
            "max": max(means)}


def compare(a: argparse.Namespace, env: str) -> dict[str, Any]:
    """Both arms on ``env``: studies, retraining on the fresh seeds, scores and the verdict."""
    w, zw = Path(a.work) / env, Path(a.zoo_work or a.work) / env
    w.mkdir(parents=True, exist_ok=True)
    zw.mkdir(parents=True, exist_ok=True)
    nd = nondiff_study(a, env, w / "nondiff-study")
    zoo = zoo_study(a, env, zw / "zoo-study")
    print(f"{env}: studies done (nondiff {nd['study_wall_s']} s, zoo {zoo['study_wall_s']} s)",
          flush=True)
    params = zoo_params(zoo["best_params"])
    with ThreadPoolExecutor(a.jobs) as pool:  # the retraining runs, --jobs processes at a time
        nd_f = [pool.submit(nondiff_retrain, a, env, w / "nondiff-study", w / "nondiff-retrain", s)
                for s in a.retrain_seeds]
        zoo_f = [pool.submit(zoo_retrain, a, env, params, zw / "zoo-retrain", s) for s in a.retrain_seeds]
        nd_runs, zoo_runs = [f.result() for f in nd_f], [f.result() for f in zoo_f]
    n_s, z_s = spread(nd_runs), spread(zoo_runs)
    return {"nondiff": {"study": nd, "retrain": nd_runs, "summary": n_s},
            "rl_zoo": {"study": zoo, "zoo_params": params, "retrain": zoo_runs, "summary": z_s},
            "verdict": {"scores_at_least_as_well": n_s["mean"] >= z_s["mean"],
                        "smaller_spread": n_s["std"] < z_s["std"],
                        "met": n_s["mean"] >= z_s["mean"] and n_s["std"] < z_s["std"]}}


def table(result: dict[str, Any]) -> str:
    """The comparison as a text table."""
    lines = [f"{'env':<12} {'tool':<8} {'trials c/p':>10} {'study env steps':>16} {'study s':>8} "
             f"{'mean':>8} {'std':>7} {'min':>8} {'max':>8}  per-seed means"]
    for env, r in result["envs"].items():
        for tool in ("nondiff", "rl_zoo"):
            s, st = r[tool]["summary"], r[tool]["study"]
            seeds = " ".join(f"{x['mean']:.1f}" for x in r[tool]["retrain"])
            lines.append(f"{env:<12} {tool:<8} {st['complete']:>4}/{st['pruned']:<5} {st['env_steps']:>16,} "
                         f"{st['study_wall_s']:>8} {s['mean']:>8.1f} {s['std']:>7.1f} "
                         f"{s['min']:>8.1f} {s['max']:>8.1f}  {seeds}")
        lines.append(f"{env:<12} verdict: {r['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run both arms on every env, write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--zoo-python", required=True, help="python of a venv with rl-zoo3 installed")
    p.add_argument("--algo", choices=("ppo", "a2c"), default="ppo",
                   help="both tools' algorithm (default ppo)")
    p.add_argument("--envs", nargs="+", default=["CartPole-v1", "Acrobot-v1"])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--timesteps", type=int, default=20_000, help="env steps per run (per trial and seed)")
    p.add_argument("--seeds-per-trial", type=int, default=2, help="nondiff's runs per trial")
    p.add_argument("--evaluations", type=int, default=4)
    p.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation in the studies")
    p.add_argument("--study-seed", type=int, default=11)
    p.add_argument("--retrain-seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    p.add_argument("--episodes", type=int, default=100, help="episodes scoring each retrained policy")
    p.add_argument("--jobs", type=int, default=1, help="retraining runs at once (the studies run one by one)")
    p.add_argument("--work", default="/tmp/rlzoo_compare")
    p.add_argument("--json", default=str(ROOT / "docs" / "rlzoo_compare.json"))
    p.add_argument("--nondiff-config", help="nondiff's run config for the studies (train.py --config), e.g. "
                   "one whose search: section widens the space; default: none (nondiff's defaults)")
    p.add_argument("--zoo-work", help="RL Zoo's arm's work dir (default --work): its finished studies and "
                   "retraining runs there are read, not rerun")
    p.add_argument("--json-key", help="write the result under this key of the --json file, keeping its other "
                   "keys (default: the result is the whole file)")
    a = p.parse_args(argv)
    if a.nondiff_config and not Path(a.nondiff_config).is_file():
        print(f"--nondiff-config: expected a YAML run config, got {a.nondiff_config!r} (no such file); give "
              "a path such as benchmarks/experiments/rlzoo_wide.yaml", file=sys.stderr)
        return 2
    if not Path(a.zoo_python).is_file():
        print(f"--zoo-python: expected the python of a venv with rl-zoo3, got {a.zoo_python!r} (no such "
              "file); create one: python3 -m venv /tmp/zoo && /tmp/zoo/bin/pip install torch rl-zoo3 pandas",
              file=sys.stderr)
        return 2
    settings = {k: v for k, v in vars(a).items() if k not in ("json",)}
    result: dict[str, Any] = {"settings": settings, "load_start": load(), "started": time.strftime("%F %T"),
                              "envs": {}}
    for env in a.envs:
        result["envs"][env] = compare(a, env)
    result["load_end"] = load()
    out: dict[str, Any] = result
    if a.json_key:
        old = Path(a.json)
        out = {**(json.loads(old.read_text()) if old.is_file() else {}), a.json_key: result}
    Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    print(table(result))
    print(f"load {result['load_start']} -> {result['load_end']}; written {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
