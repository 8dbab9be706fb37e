"""``train.py --optimize``: plan, run and resume an Optuna study whose trials are ordinary run dirs.

A study dir holds::

    study.yaml       the base config plus its resolved search: section; --resume reads only this
    study.sig        this user's signature of study.yaml (agents/run/trust.py): a study dir from elsewhere
                     whose config would run code resumes only with --trust-run-dir
    study.journal    Optuna's journal storage (append-only, file-locked): every trial's params and reports
    trial-NNNN/      trial.yaml (the config of the trial) and seed-S/, one run dir per seed (+ seed-S.log)
    best.yaml        the best complete trial's trial.yaml, rewritten whenever the best improves
    trials.md, trials.csv   the trials, best first, with per-seed scores and params
    history.png, importance.png   Optuna's plots of the scores and of the parameters' importance

A SIGKILLed study loses no finished trial (they are in the journal); ``--optimize --resume DIR`` adopts the
trials it left running (their params are stored) and continues their runs from their checkpoints. With
``--ray-address`` (or ``--backend rllib``) each trial runs as a Ray task instead (:mod:`agents.search.onray`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import random
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from agents.config import check_algorithm, load_yaml, validate
from agents.config.loading import load_yaml_bytes
from agents.config.search import SearchSection, Space, resolve_space, space_to_yaml
from agents.run import cli, trust
from agents.run.checkpoint import atomic_write_bytes
from agents.run.rundir import safe_name
from agents.search import report, spaces
from agents.search.progress import TrialBar
from agents.search.storage import JOURNAL, check_journal, opening, storage_at
from agents.search.trial import Children, Outcome, TrialRun, check_runs_at_once, make_pruner
from envs.errors import UserError

if TYPE_CHECKING:
    import optuna

    from agents.search.onray import RayTrials

log = logging.getLogger(__name__)
STUDY_FILE = "study.yaml"
SIGNATURE_FILE = "study.sig"
FINISHED = ("COMPLETE", "PRUNED", "FAIL")
MAX_FAILURES = 3
"""The study stops when this many trials failed and none completed: the config, not the luck, is wrong."""


@dataclass
class Plan:
    """What a study runs: its dir, the base config, its search settings and the resolved space."""

    path: Path
    base: dict[str, Any]
    """The config mapping every trial starts from (keys that were given only; no seed)."""
    search: SearchSection
    space: Space
    seed: int


def read_search(raw: Any, source: str, overrides: dict[str, Any]) -> SearchSection:
    """The ``search:`` section with the command line over it, or a one-line UserError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: section 'search' must be a mapping of settings, got {type(raw).__name__}")
    try:
        return SearchSection.model_validate({**raw, **overrides})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        got = "" if where == "storage" else f" (got {err.get('input')!r})"  # a URL may hold a password
        raise UserError(f"{source}: 'search.{where}' {err['msg'][:1].lower() + err['msg'][1:]}{got}") from e


def plan(args: argparse.Namespace) -> Plan:
    """Resolve a new study from the command line: the env and config once (as train.py does), the space."""
    from agents.run.runner import build_config

    if args.run_dir:
        raise UserError("--optimize writes one run dir per trial and seed: give --study-dir, not --run-dir")
    source = args.config or "command line"
    search = read_search(load_yaml(args.config).get("search") if args.config else None, source,
                         cli.search_overrides(args))
    if args.ray_address is None:  # the runs are processes of this machine (or of its private Ray)
        check_runs_at_once(search)
    cfg, env, spare = build_config(args)  # bad env, config or algorithm: one line, exit 2, before any trial
    if spare is not None:
        spare.close()
    seed = next(s for s in (search.seed, cfg.train.seed, random.SystemRandom().randrange(2**31))
                if s is not None)
    fixed_keys = tuple(a.partition("=")[0].strip() for a in args.set or [])
    space, fixed = resolve_space(search, cfg.agent.backend, cfg.agent.algo, source, fixed_keys=fixed_keys,
                                 budget=(cfg.train.timesteps, cfg.train.num_envs))
    base = cfg.model_dump(mode="json", exclude_unset=True)
    base.pop("meta", None)
    base = spaces.apply(base, {**fixed, "train.timesteps": cfg.train.timesteps,
                               "eval.every": max(1, cfg.train.timesteps // search.evaluations)})
    base["train"].pop("seed", None)
    if args.ray_address is not None:  # where the trials run is no setting of a trial (nor of best.yaml)
        rllib = base.pop("rllib", {})
        rllib.pop("address", None)
        base.update({"rllib": rllib} if rllib else {})
    base["agent"] = {"backend": cfg.agent.backend, "algo": cfg.agent.algo, **base.get("agent", {})}
    check_algorithm(validate(base, source), env.spaces[1], source)
    resolved = search.model_copy(update={"seed": seed, "defaults": False, "space": space_to_yaml(space)})
    path = Path(args.study_dir) if args.study_dir else (
        Path("runs") / safe_name(cfg.env.id or "env") / f"study-{time.strftime('%Y%m%d-%H%M%S')}")
    taken = UserError(f"study dir {str(path)!r} already exists and is not empty; choose a new --study-dir, "
                      f"or continue it with --optimize --resume {path}")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise taken
    path.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump({**base, "search": resolved.model_dump(mode="json")}, sort_keys=False)
    try:  # claimed, not just checked: of two studies started on one dir, the second rewrote the first's plan
        (path / STUDY_FILE).open("xb").close()
    except FileExistsError as e:
        raise taken from e
    atomic_write_bytes(path / STUDY_FILE, text.encode())
    trust.sign_file(path / SIGNATURE_FILE, text.encode(), trust.STUDY_DOMAIN)
    return Plan(path, base, resolved, space, seed)


def reopen(args: argparse.Namespace) -> Plan:
    """The plan of a study dir (``--optimize --resume DIR``); ``--trials`` and ``--jobs`` may change."""
    path = Path(args.resume)
    if not (path / STUDY_FILE).is_file():
        raise UserError(f"{str(path)!r} is not a study dir (no {STUDY_FILE}); pass a directory made by "
                        "train.py --optimize")
    ignored = cli.given_flags(args, ("--ray-address", "--trials", "--jobs"))
    if ignored:  # were dropped without a word: --seeds-per-trial 5 ran 1 seed, as planned
        raise UserError(f"{', '.join(ignored)}: a resumed study keeps the settings it was planned with (its "
                        f"{STUDY_FILE}); --optimize --resume takes --trials, --jobs and --ray-address only. "
                        "Drop the others, or start a new study with another --study-dir")
    raw, data = load_yaml_bytes(path / STUDY_FILE)  # read once: what is checked is what is parsed
    source = str(path / STUDY_FILE)
    keep = {k: v for k, v in cli.search_overrides(args).items() if k in ("trials", "jobs")}
    search = read_search(raw.pop("search", None), source, keep)
    if args.ray_address is None:
        check_runs_at_once(search)
    cfg = validate(raw, source)
    trust.check_study(path / STUDY_FILE, path / SIGNATURE_FILE, data, cfg, trusted=args.trust_run_dir)
    space, _ = resolve_space(search, cfg.agent.backend, cfg.agent.algo, source)
    if search.seed is None:
        raise UserError(f"{source}: search.seed is missing; it is written by train.py --optimize")
    return Plan(path, raw, search, space, search.seed)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the study dir's lock: one study process per dir (its runs have their own locks)."""
    fd = os.open(path / "study.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            raise UserError(f"study {str(path)!r} is being run right now by another process; wait for it or "
                            "stop it (Ctrl-C), then resume") from e
        yield
    finally:
        os.close(fd)


def _sampler(search: SearchSection, seed: int) -> optuna.samplers.BaseSampler:
    import optuna

    startup = min(10, max(1, search.trials // 3))
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(n_startup_trials=startup, seed=seed,
                                            warn_independent_sampling=False)
    return optuna.samplers.TPESampler(n_startup_trials=startup, multivariate=True,
                                      constant_liar=search.jobs > 1, seed=seed)


def _best_text(trials: list[optuna.trial.FrozenTrial]) -> str:
    best = report.best_trial(trials)
    return f"best {best.value:.4g} (trial {best.number})" if best is not None else "no complete trial yet"


def optimize(args: argparse.Namespace, argv: list[str]) -> int:
    """Run ``train.py --optimize`` (new, or ``--resume STUDY``); return the exit code."""
    if not args.optimize:
        given = (*cli.SEARCH_FLAGS, "--study-dir")
        flags = [f for f in given if getattr(args, f[2:].replace("-", "_"), None) is not None]
        raise UserError(f"{', '.join(flags)} belong to a hyperparameter search: add --optimize")
    p = reopen(args) if args.resume else plan(args)
    with locked(p.path):
        if args.ray_address is None and p.base["agent"]["backend"] != "rllib":
            return Study(p).run()
        from agents.search import onray  # imports ray

        with onray.session(p.path, p.search, args.ray_address) as on_ray:
            return Study(p, on_ray).run()


class Study:
    """The running study: workers that each take a trial (a stale one first, else a new one) until done."""

    def __init__(self, p: Plan, on_ray: RayTrials | None = None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        self.p, self.on_ray = p, on_ray
        own = p.search.storage is None
        resumed = own and (p.path / JOURNAL).exists()
        if resumed:
            check_journal(p.path / JOURNAL)  # a damaged journal: one line, before Optuna replays it
        storage = storage_at(p.path / JOURNAL, p.search.storage)
        # a resumed sampler is seeded past the trials it drew: a random sampler must not replay them
        try:
            started = len(optuna.load_study(study_name="nondiff", storage=storage).trials) if resumed else 0
        except KeyError:  # an empty journal (killed before Optuna wrote the study): it is created below
            started = 0
        # a shared storage holds many studies: each is named after its dir
        self.name = "nondiff" if own else f"nondiff-{p.path.resolve().name}"
        with opening(p.search.storage):
            self.study = optuna.create_study(study_name=self.name, storage=storage, direction="maximize",
                                             sampler=_sampler(p.search, p.seed + started),
                                             pruner=make_pruner(p.search), load_if_exists=True)
        # a study's own journal has no other writer (the lock): its running trials were left by a killed
        # study and are adopted; a shared storage's running trials may be live elsewhere
        running = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
        self.stale = running if own else []
        self.children = Children()
        self.lock = threading.Lock()
        self.failures = 0
        self.t0 = time.monotonic()
        self.seeds = [p.seed + i for i in range(p.search.seeds_per_trial)]
        self.bar = TrialBar(p.search.trials, 0, "", force_terminal=False)  # run() opens the console's

    def _take(self) -> tuple[optuna.Trial, set[int]] | None:
        """The next trial to run (and the steps it reported already), or None when the study is done."""
        import optuna

        with self.lock:
            if self.children.stopping.is_set() or self._given_up():
                return None
            if self.stale:
                frozen = self.stale.pop(0)
                # Optuna's FrozenTrial names its storage id only privately; Trial(study, id) reopens it
                return optuna.trial.Trial(self.study, frozen._trial_id), set(frozen.intermediate_values)
            states = [t.state.name for t in self.study.get_trials(deepcopy=False)]
            if sum(s in (*FINISHED, "RUNNING") for s in states) >= self.p.search.trials:
                return None
            return self.study.ask(), set()

    def _given_up(self) -> bool:
        return self.failures >= MAX_FAILURES and self.best() is None

    def best(self) -> optuna.trial.FrozenTrial | None:
        """The best complete trial so far."""
        return report.best_trial(self.study.get_trials(deepcopy=False))

    def _work(self) -> None:
        while (taken := self._take()) is not None:
            trial, reported = taken
            values = spaces.suggest(trial, self.p.space)
            name = f"trial-{trial.number:04d}"
            path = self.p.path / name
            path.mkdir(exist_ok=True)
            if not (path / "trial.yaml").is_file():
                head = f"# trial {trial.number} of the study in {self.p.path}; train.py --config trains it\n"
                atomic_write_bytes(path / "trial.yaml", (head + self._config(values)).encode())
            for key, value in (("dir", name), ("seeds", self.seeds), ("config_values", values)):
                trial.set_user_attr(key, value)
            t0, timesteps = time.monotonic(), int(self.p.base["train"]["timesteps"])
            outcome = (self.on_ray.run(trial, self.seeds, timesteps, self.children.stopping) if self.on_ray
                       else TrialRun(trial, path, self.seeds, timesteps, self.children, reported,
                                     self.p.search.across_seeds).run())
            self._finish(trial, outcome, time.monotonic() - t0)

    def _config(self, values: dict[str, Any]) -> str:
        """The YAML config of a trial with these searched values."""
        return yaml.safe_dump(spaces.apply(self.p.base, values), sort_keys=False)

    def _write_best(self, best: optuna.trial.FrozenTrial) -> None:
        values = dict(best.user_attrs.get("config_values", best.params))
        report.write_best(self.p.path, best, self._config(values), self.p.search.across_seeds)

    def _finish(self, trial: optuna.Trial, outcome: Outcome, seconds: float) -> None:
        from optuna.trial import TrialState

        with self.lock:
            if outcome.state == "stopped":  # left RUNNING: --resume continues it from its checkpoints
                return
            trial.set_user_attr("seed_scores", outcome.seed_scores)
            if outcome.state == "complete":
                before = self.best()
                self.study.tell(trial, outcome.value)
                best = self.best()
                if best is not None and (before is None or best.number != before.number):
                    self._write_best(best)
            elif outcome.state == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.failures += 1
                trial.set_user_attr("error", outcome.message)
                self.study.tell(trial, state=TrialState.FAIL)
            self._say(trial.number, outcome, seconds)

    def _say(self, number: int, outcome: Outcome, seconds: float) -> None:
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state.name in FINISHED for t in trials)
        seeds = ", ".join(f"{s:.4g}" for s in outcome.seed_scores)
        what = (f"{outcome.value:.4g} (seeds {seeds})" if outcome.state == "complete"
                else f"{outcome.value:.4g} at evaluation {outcome.evaluation} (seeds {seeds})"
                if outcome.state == "pruned" else outcome.message)
        tail = _best_text(trials)
        line = f"[{done}/{self.p.search.trials}] trial {number} {outcome.state}: {what} in {seconds:.0f} s"
        self.bar.say(f"{line} | {tail} | {time.monotonic() - self.t0:.0f} s", done, tail)

    def run(self) -> int:
        """Run the study to its number of trials, or until Ctrl-C/SIGTERM; write the results."""
        print(f"study directory: {self.p.path}\n"
              f"watch it with:  {cli.shown('tensorboard')} --logdir {self.p.path}\n"
              f"{self.p.search.trials} trials × {len(self.seeds)} seeds × "
              f"{self.p.base['train']['timesteps']:,} steps, {self.p.search.sampler} sampler, "
              f"{self.p.search.pruner} pruner, space: {', '.join(self.p.space)}", flush=True)
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state.name in FINISHED for t in trials)
        if done or self.stale:
            print(f"resuming: {done} finished trial(s) kept, {len(self.stale)} running one(s) continued from "
                  "their checkpoints", flush=True)
        self.bar = TrialBar(self.p.search.trials, done, _best_text(trials))
        stopped: list[str] = []

        def on_signal(signum: int, frame: object) -> None:
            if stopped:  # a second Ctrl-C: no checkpoints
                raise KeyboardInterrupt
            stopped.append(signal.Signals(signum).name)
            print(f"{stopped[0]}: stopping the running trials (each run writes a checkpoint)", flush=True)
            self.children.stop_all()

        old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            workers = [threading.Thread(target=self._work, name=f"trial-worker-{i}", daemon=True)
                       for i in range(self.p.search.jobs)]
            for w in workers:
                w.start()
            while any(w.is_alive() for w in workers):
                for w in workers:
                    w.join(0.2)
        finally:
            self.bar.close()
            for s, h in old.items():
                signal.signal(s, h)
            self._write()
        return self._summary(stopped[0] if stopped else None)

    def _write(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        best = report.best_trial(trials)
        if best is not None:
            self._write_best(best)
        report.write_table(self.p.path, trials)
        report.write_plots(self.p.path, self.study)

    def _summary(self, stopped: str | None) -> int:
        trials = self.study.get_trials(deepcopy=False)
        best = report.best_trial(trials)
        counts = {s: sum(t.state.name == s for t in trials) for s in (*FINISHED, "RUNNING")}
        print(f"{counts['COMPLETE']} complete, {counts['PRUNED']} pruned, {counts['FAIL']} failed"
              f"{', ' + str(counts['RUNNING']) + ' to resume' if counts['RUNNING'] else ''}; "
              f"table: {self.p.path / 'trials.md'}", flush=True)
        if best is not None:
            print(f"best: trial {best.number}, score {best.value:.4g}; train with it:  python train.py "
                  f"--config {self.p.path / 'best.yaml'}", flush=True)
        if stopped or counts["RUNNING"]:
            print(f"resume with:  python train.py --optimize --resume {self.p.path}", flush=True)
        if best is None and not stopped:
            fail = next((t for t in trials if t.state.name == "FAIL"), None)
            why = f": {fail.user_attrs.get('error')}" if fail is not None else ""
            print(f"error: no trial completed{why}", file=sys.stderr, flush=True)
            return 1
        return 0
