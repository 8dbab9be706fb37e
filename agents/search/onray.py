"""A study's trials as Ray tasks: ``train.py --optimize --ray-address ADDR``, or ``--backend rllib``.

Design: Optuna workers as Ray tasks, not Ray Tune. The driver runs the same
:class:`~agents.search.study.Study` as on one machine (its ``--jobs`` workers ask for trials, tell their
outcome, adopt a killed study's running trials and write ``best.yaml``); the only change is where a trial's
:class:`~agents.search.trial.TrialRun` runs: in a Ray task (``_run_trial``) that Ray places on a node with
``search.cpus_per_trial`` free CPUs. The task opens the study's storage itself, reports each evaluation and
asks the pruner there, exactly as a local trial does, and returns the :class:`~agents.search.trial.Outcome`
with the node it ran on (the driver stores it in the trial's user attr ``ray_node``). So a trial is the same
run dirs, the same pruning, the same resume and the same ``best.yaml`` whichever way it ran. Ray Tune with
``OptunaSearch`` would own the trial loop instead: its trials are Tune trainables with Tune's own dirs,
checkpoints and stopping, and the median pruner, the adoption of a killed study's running trials and
``best.yaml`` would all be written a second time for it.

Requirement: **a shared filesystem.** A trial's seeds are ordinary run dirs under the study dir, written by
``train.py`` processes on the node the task landed on, and the task reads their evaluations there; the study's
journal (``study.journal``, file-locked, append-only; Optuna supports it on NFS) is in the same dir. So the
study dir must be mounted at the same path on every node that may run a trial (and the repository importable
there, as for RLlib's env runners). Before the first trial each such node is probed (a token file written by
the driver, read by a task pinned to the node); a node that does not see it is refused in one line (a node
that joins later is not probed). With
``search.storage`` (PostgreSQL) the trials' storage is that server instead (each node then needs
``PGPASSWORD`` or ``~/.pgpass``); the run dirs still need the shared study dir. Optuna's gRPC storage proxy
(``optuna.storages.run_grpc_proxy_server``) would free the storage from the filesystem, but not the run dirs,
so it is not used.

A killed driver loses no finished trial: they are told to the journal as they end. Ray then ends the driver's
tasks; each run's guard (:mod:`agents.search.child`) gets the parent-death signal and the run writes its
checkpoint, and ``--optimize --resume DIR`` (with ``--ray-address`` again, or without it to finish on one
machine) continues the trials it left running. A task whose worker or node dies is retried by Ray (its runs
resume from their checkpoints); Ctrl-C stops the running tasks' runs with a checkpoint each, through a flag
actor that each task polls.

``ray`` is imported here lazily, only when a study runs on Ray: ``import agents.search`` does not load it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.config.search import SearchSection
from agents.run import localray
from agents.run.checkpoint import atomic_write_bytes
from agents.search.trial import POLL_S, Children, Outcome, TrialRun
from envs.errors import UserError

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)
PROBE = ".ray-probe"
"""The file in the study dir whose token each node must read to run trials (removed after the probe)."""
CONNECT_TIMEOUT = 5.0
"""Seconds to reach the Ray address before saying no cluster is there."""
PROBE_TIMEOUT = 120.0
"""Seconds the probe tasks may take (a node starting its first worker is slow)."""
RETRIES = 3
"""Times Ray reruns a trial whose worker or node died (its runs resume from their checkpoints)."""


@dataclass(frozen=True)
class Placement:
    """Where a trial's task ran."""

    node_id: str
    node_ip: str
    hostname: str


@dataclass(frozen=True)
class TrialTask:
    """What a task needs to run one trial where it lands."""

    study_dir: str
    """The study dir (absolute), the same path on every node."""
    study_name: str
    search: SearchSection
    """The study's search settings: its storage (None: the journal in the study dir) and pruner."""
    trial_id: int
    """Optuna's storage id of the trial (the driver asked for it, or adopted it from a killed study)."""
    seeds: list[int]
    timesteps: int
    cwd: str
    """The driver's working directory: the runs start there where the node has it, so that a config's
    relative paths resolve as on one machine."""


@dataclass(frozen=True)
class TaskResult:
    """A task's answer: how the trial ended, and where."""

    outcome: Outcome
    placement: Placement


def cpus_per_trial(search: SearchSection) -> float:
    """The CPUs a trial's task reserves: ``search.cpus_per_trial``, else one per seed."""
    return search.cpus_per_trial if search.cpus_per_trial is not None else float(search.seeds_per_trial)


def _check_reachable(address: str) -> None:
    """One line, in seconds, when nothing listens at ``address`` (ray.init would retry for a minute)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray-address {address!r}: expected HOST:PORT (the head's GCS, e.g. head:6379) or "
                        "ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        raise UserError(f"--ray-address {address!r}: no Ray cluster is reachable there ({e.strerror or e}); "
                        "start one with `ray start --head` (docs/distributed.md), or drop --ray-address to "
                        "run the trials on this machine") from e


def connect(address: str | None, num_cpus: int) -> None:
    """Join the cluster at ``address``, or start a private local Ray of ``num_cpus`` CPUs (loopback,
    token-authenticated: :mod:`agents.run.localray`)."""
    import ray

    if address is None:
        localray.start(num_cpus, dashboard=False)
        return
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as e:
        raise UserError(f"--ray-address {address!r}: a port is open there but joining the Ray cluster failed "
                        f"({str(e).strip().splitlines()[0]}); check that it is a Ray head of version "
                        f"{ray.__version__} and that RAY_AUTH_TOKEN holds the cluster's token") from e


def _nodes(cpus: float) -> list[dict[str, Any]]:
    """The alive nodes that can hold a trial of ``cpus`` CPUs, or a one-line UserError when none can."""
    import ray

    alive = [n for n in ray.nodes() if n.get("Alive")]
    fit = [n for n in alive if n.get("Resources", {}).get("CPU", 0.0) >= cpus]
    if not fit:
        most = max((n.get("Resources", {}).get("CPU", 0.0) for n in alive), default=0.0)
        raise UserError(f"each trial reserves {cpus:g} CPUs on Ray (search.cpus_per_trial, by default "
                        f"--seeds-per-trial) but no node of the cluster has that many (the most: {most:g}); "
                        "set search.cpus_per_trial or give fewer --seeds-per-trial")
    return fit


def _sees(path: str, token: str) -> tuple[bool, str]:
    """On a node: whether the study dir there holds the driver's probe token; and the node's host name."""
    try:
        seen = (Path(path) / PROBE).read_text()
    except OSError:
        seen = ""
    return seen == token, socket.gethostname()


def write_probe(study_dir: Path) -> str:
    """Write a fresh token into the study dir's probe file and return it."""
    token = secrets.token_hex(16)
    atomic_write_bytes(study_dir / PROBE, token.encode())
    return token


def check_shared(study_dir: Path, cpus: float) -> int:
    """Check that every node that can hold a trial sees the study dir (a shared filesystem); return their
    number.

    Raises:
        UserError: a node does not see the driver's probe file at the same path, in one line.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = _nodes(cpus)
    path = str(study_dir.resolve())
    token = write_probe(study_dir)
    try:
        probe = ray.remote(num_cpus=0, max_retries=0)(_sees)
        refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(path, token) for n in nodes]
        answers = ray.get(refs, timeout=PROBE_TIMEOUT)
    finally:
        (study_dir / PROBE).unlink(missing_ok=True)
    for node, (seen, host) in zip(nodes, answers):
        if not seen:
            raise UserError(f"Ray node {node['NodeManagerAddress']} ({host}) does not see the study dir "
                            f"{path}: the trials write their run dirs and the study's journal there, so it "
                            "must be on a filesystem shared by every node at the same path (NFS or the "
                            "like); or drop --ray-address to run the study on this machine")
    return len(nodes)


class _Stop:
    """A flag actor: set by the driver on Ctrl-C, polled by each running task."""

    def __init__(self) -> None:
        self.flag = False

    def set(self) -> None:
        """Ask every task to stop its runs (each writes a checkpoint)."""
        self.flag = True

    def is_set(self) -> bool:
        """Whether the study is stopping."""
        return self.flag


def _run_trial(task: TrialTask, stop: Any) -> TaskResult:
    """A Ray task: run one trial's seeds on this node, reporting to the study's storage; return how it
    ended and where."""
    import optuna
    import ray

    from agents.search.storage import JOURNAL, opening, storage_at
    from agents.search.trial import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(task.study_dir)
    with opening(task.search.storage):
        storage = storage_at(path / JOURNAL, task.search.storage)
        study = optuna.load_study(study_name=task.study_name, storage=storage,
                                  sampler=optuna.samplers.RandomSampler(), pruner=make_pruner(task.search))
    trial = optuna.trial.Trial(study, task.trial_id)
    reported = set(storage.get_trial(task.trial_id).intermediate_values)  # a retried or adopted trial's
    children, done = Children(task.cwd if os.path.isdir(task.cwd) else None), threading.Event()

    def watch() -> None:
        while not done.wait(POLL_S):
            if ray.get(stop.is_set.remote()):
                children.stop_all()
                return

    watcher = threading.Thread(target=watch, name="stop-watch", daemon=True)
    watcher.start()
    try:
        name = f"trial-{trial.number:04d}"
        outcome = TrialRun(trial, path / name, task.seeds, task.timesteps, children, reported,
                           task.search.across_seeds).run()
    finally:
        done.set()
        watcher.join()
    context = ray.get_runtime_context()
    return TaskResult(outcome, Placement(context.get_node_id(), ray.util.get_node_ip_address(),
                                         socket.gethostname()))


class RayTrials:
    """The driver's side: run a trial as a Ray task and wait for its outcome (or stop it on Ctrl-C)."""

    def __init__(self, study_dir: Path, search: SearchSection) -> None:
        import ray

        self.study_dir, self.search = study_dir.resolve(), search
        cpus = cpus_per_trial(search)
        self._task = ray.remote(num_cpus=cpus, max_retries=RETRIES)(_run_trial)
        self._stop: Any = ray.remote(num_cpus=0)(_Stop).remote()
        self._stopped = False
        self._lock = threading.Lock()

    def run(self, trial: optuna.Trial, seeds: list[int], timesteps: int,
            stopping: threading.Event) -> Outcome:
        """Run ``trial`` on the cluster; record its node in its user attrs; return how it ended."""
        import ray

        task = TrialTask(str(self.study_dir), trial.study.study_name, self.search, trial._trial_id, seeds,
                         timesteps, os.getcwd())
        ref = self._task.remote(task, self._stop)
        while not ray.wait([ref], timeout=POLL_S)[0]:
            if stopping.is_set():
                self._stop_all()
        try:
            result: TaskResult = ray.get(ref)
        except ray.exceptions.RayError as e:  # raised in the task, or its node died RETRIES + 1 times
            cause = e.cause if isinstance(e, ray.exceptions.RayTaskError) and e.cause is not None else e
            text = str(cause).strip()
            first = text.splitlines()[0] if text else type(cause).__name__
            if stopping.is_set():
                return Outcome("stopped")
            return Outcome("failed", message=f"its Ray task failed: {first}")
        where = result.placement
        trial.set_user_attr("ray_node", {"node_id": where.node_id, "node_ip": where.node_ip,
                                         "hostname": where.hostname})
        return result.outcome

    def _stop_all(self) -> None:
        with self._lock:
            if not self._stopped:
                self._stopped = True
                self._stop.set.remote()


@contextlib.contextmanager
def session(study_dir: Path, search: SearchSection, address: str | None) -> Iterator[RayTrials]:
    """Ray for one run of a study: join ``address`` (None: a private local Ray with room for ``--jobs``
    trials), check that the trials fit and see the study dir, and leave Ray when the study ends."""
    cpus = cpus_per_trial(search)
    connect(address, num_cpus=math.ceil(cpus * search.jobs))
    try:
        nodes = check_shared(study_dir, cpus)
        where = f"the Ray cluster at {address}" if address else "a private local Ray"
        print(f"trials run as Ray tasks on {where}: {nodes} node(s) can hold one; each reserves {cpus:g} "
              f"CPU(s), {search.jobs} at a time", flush=True)
        yield RayTrials(study_dir, search)
    finally:
        localray.shutdown()
