"""Env-runner restarts on RLlib: each one said on the console, the run ended once they pass a budget.

RLlib (new API stack) restarts an env runner whose process died, or whose ``sample()`` raised (the runner
then waits ``delay_between_env_runner_restarts_s`` and exits), through Ray's actor restarts
(``max_num_env_runner_restarts`` per runner). ``Algorithm.train()`` neither raises nor stops when every
runner keeps failing: it returns iterations without samples, so a run whose runners die on every step
would loop until Ray's per-runner restarts are spent (1,000 by default) and then wait forever.
:class:`RunnerRestarts` reads RLlib's run-wide count after each iteration, says each restart (one line,
rate-limited) and raises :class:`~envs.errors.EnvFailure` once the failures pass
``rllib.max_runner_restarts``: the run then writes ``final/`` (the model is sound) and prints one line
with the runner's last error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.run.envfactory import MEASURED_FROM, bound_env_copies, env_factory
from envs.errors import EnvFailure, UserError

if TYPE_CHECKING:
    from agents.config import RunConfig
    from agents.run.resolved import ResolvedEnv

log = logging.getLogger(__name__)

RESTART_DELAY_S = 2.0
"""RLlib's ``delay_between_env_runner_restarts_s`` (its default: 60 s): how long a runner whose ``sample()``
raised waits before it exits and Ray restarts it (``rllib.extra`` overrides it)."""
SAY_EVERY_S = 30.0
"""After the first restart line, at most one summary line per this many seconds."""
ERROR_CHARS = 240
"""The runner's last error is cut to this many characters in a console line."""
ACTOR_MANAGER_LOGGER = "ray.rllib.utils.actor_manager"
"""The logger RLlib's fault-tolerant actor manager reports a failed runner on."""
_EXIT_DETAIL = re.compile(r"Worker exit detail: ([^.]*)")
_RAY_ERROR = re.compile(r"Ray error \((.*)\), taking actor (\d+) out of service", re.DOTALL)


def check_cpus(cfg: RunConfig) -> None:
    """Refuse env runners and learners that the private local Ray can never place: each asks Ray for one
    CPU, and RLlib waits for them for ever, silently (``--num-env-runners 40`` on two cores hung). On a
    cluster (``rllib.address``, already joined) more may join later: a warning.

    Raises:
        UserError: naming the settings, the CPUs they need and have, and the fixes.
    """
    import ray

    r = cfg.rllib
    learners = r.num_learners if cfg.train.device != "cuda" else 0  # a GPU learner takes no CPU
    needed = r.num_env_runners + learners
    if not needed:
        return
    if r.address:
        have = int(ray.cluster_resources().get("CPU", 0))
        if needed > have:
            log.warning("rllib.num_env_runners and num_learners ask the cluster at %s for %d CPUs (one each) "
                        "and it has %d: RLlib waits until nodes with free CPUs join", r.address, needed, have)
        return
    if r.num_cpus:
        have = r.num_cpus
    else:
        from ray._private.utils import get_num_cpus  # what the local Ray will take: cores, cgroup quota

        have = int(get_num_cpus())
    if needed <= have:
        return
    what = f"rllib.num_env_runners={r.num_env_runners}"
    what += f" with rllib.num_learners={learners} need" if learners else " needs"
    raise UserError(f"{what} {needed} CPUs from Ray (one each) and the private local Ray has {have} "
                    f"({'rllib.num_cpus' if r.num_cpus else 'this machine'}); RLlib would wait for them for "
                    f"ever: use --num-env-runners {max(have - learners, 0)} or fewer (each runner steps "
                    "rllib.envs_per_runner envs), raise rllib.num_cpus to oversubscribe the cores, or join a "
                    "cluster with --ray-address")


def env_counts(cfg: RunConfig) -> tuple[int, int]:
    """``rllib.num_env_runners``, and the envs each steps (the local runner's when there are none)."""
    r = cfg.rllib
    return r.num_env_runners, r.envs_per_runner or max(1, cfg.train.num_envs // max(1, r.num_env_runners))


def check_runner_envs(cfg: RunConfig, env: ResolvedEnv, make: Callable[[], Any] | None = None) -> None:
    """Refuse env runners whose envs would not fit in memory, before Ray starts: ``--num-envs 100000`` asked
    one runner for 100,000 ``robot`` envs, about 57 GB. ``make`` builds one of a runner's envs (default: the
    env factory's). On a cluster the runners may sit on different nodes: only one runner's envs are bounded
    by this machine's memory."""
    runners, per_runner = env_counts(cfg)
    if env.batched(cfg) or per_runner < MEASURED_FROM:
        return
    here = 1 if cfg.rllib.address else max(runners, 1)
    setting = ("rllib.envs_per_runner" if cfg.rllib.envs_per_runner else "train.num_envs (--num-envs)")
    bound_env_copies(cfg, make or env_factory(cfg, env), per_runner * here,
                     "in the env runners" if runners else "in the local env runner", setting,
                     here if cfg.rllib.envs_per_runner else 1)


STOP_WAIT_S = 10.0
"""How long closing waits for RLlib's env runners to stop before it kills them."""


def stop_algo(algo: Any, wait_s: float = STOP_WAIT_S) -> bool:
    """``algo.stop()``, bounded: a runner whose env step never returns (a hung env, stopped by a second
    Ctrl-C) never answers RLlib's ``stop`` call, and the trainer hung after its checkpoint. Past ``wait_s``
    the remote runners are killed, which ends the call. Returns False when they had to be killed."""
    import threading

    import ray

    done = threading.Event()

    def stop() -> None:
        try:
            algo.stop()
        finally:
            done.set()

    threading.Thread(target=stop, name="nondiff-rllib-stop", daemon=True).start()
    if done.wait(wait_s):
        return True
    log.warning("RLlib's env runners did not stop within %g s (an env step that never returns?): killing "
                "them", wait_s)
    logging.getLogger(ACTOR_MANAGER_LOGGER).setLevel(logging.CRITICAL)  # not the kill's tracebacks as errors
    try:
        actors = list(algo.env_runner_group._worker_manager.actors().values())
    except Exception:  # noqa: BLE001 - RLlib's internals moved: the private Ray's shutdown still ends them
        actors = []
    for actor in actors:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already dead
            pass
    done.wait(wait_s)
    logging.getLogger(ACTOR_MANAGER_LOGGER).setLevel(logging.NOTSET)
    return False


def shorten(text: str) -> str:
    """The first line of ``text`` and Ray's "Worker exit detail" sentence if it has one, cut to
    :data:`ERROR_CHARS`."""
    lines = text.strip().splitlines()
    first = lines[0].strip() if lines else "(no message)"
    detail = _EXIT_DETAIL.search(text)
    if detail and detail.group(1) not in first:
        first = f"{first} ({detail.group(1)})"
    return first if len(first) <= ERROR_CHARS else first[:ERROR_CHARS - 1] + "…"


class LastRunnerError(logging.Handler):
    """Keeps the latest error RLlib's actor manager logs about a runner it takes out of service.

    Attributes:
        text: that error, shortened, with the runner's index; None until one came.
    """

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Record ``Ray error (…), taking actor N out of service`` lines; ignore the others."""
        try:
            match = _RAY_ERROR.search(record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record from a library must not stop training
            return
        if match:
            self.text = f"env runner {match.group(2)}: {shorten(match.group(1))}"


ENV_ERROR_PREFIX = "envs.errors."
"""How a runner's log shows a nondiff env error that ended it (``envs.errors.EnvGaveUp: env X: ...``)."""


def logged_env_error(logs: Path | None = None) -> str | None:
    """The last nondiff env error that a runner on this node wrote to its log (``worker-*.err`` in ``logs``,
    default this node's Ray logs), cut to :data:`ERROR_CHARS`; None if none. RLlib itself only reports that
    the runner's process died. Reads at most 64 KiB of each of the 20 newest logs."""
    try:
        if logs is None:
            import ray

            node: Any = ray._private.worker._global_node
            logs = Path(node.get_logs_dir_path())
        files = sorted(logs.glob("worker-*.err"), key=lambda f: f.stat().st_mtime, reverse=True)[:20]
    except Exception:  # noqa: BLE001 - a best-effort detail in an error line
        return None
    for f in files:
        try:
            with f.open("rb") as fh:
                fh.seek(max(0, f.stat().st_size - 65536))
                lines = fh.read().decode("utf-8", "replace").splitlines()
        except OSError:
            continue
        found = [line for line in lines if line.startswith(ENV_ERROR_PREFIX)]
        if found:
            return found[-1][len(ENV_ERROR_PREFIX):][:ERROR_CHARS]
    return None


def logs_dir() -> str:
    """Where this node's Ray keeps the runners' own output (their tracebacks), or a phrase for it."""
    try:
        import ray

        node: Any = ray._private.worker._global_node
        path = node.get_logs_dir_path()
    except Exception:  # noqa: BLE001 - a best-effort hint in an error line
        return "Ray's session logs (/tmp/ray/session_latest/logs on the runner's node)"
    return f"{path} (worker-*.err, on the runner's node)"


class RunnerRestarts:
    """Counts RLlib's env-runner restarts, says them on the console and bounds them for the whole run.

    A failure is a restart already made or a runner out of service now (restarts that Ray has still to make).
    With a budget of N, failure N + 1 raises :class:`EnvFailure`; N = 0 ends the run at the first failure.

    Args:
        budget: restarts allowed (``rllib.max_runner_restarts``).
        window: seconds between two summary lines.
        clock: the time source (``time.monotonic``).
    """

    def __init__(self, budget: int, window: float = SAY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget, self.window, self.clock = budget, window, clock
        self.restarts = 0
        self.errors = LastRunnerError()
        self._untold = 0
        self._last_line: float | None = None

    def attach(self) -> None:
        """Start reading RLlib's runner errors (in the driver)."""
        logging.getLogger(ACTOR_MANAGER_LOGGER).addHandler(self.errors)

    def detach(self) -> None:
        """Stop reading them."""
        logging.getLogger(ACTOR_MANAGER_LOGGER).removeHandler(self.errors)

    def last_error(self) -> str:
        """The runner's last error as RLlib reported it, or a phrase saying none was seen."""
        return self.errors.text or "(RLlib reported no error text)"

    def observe(self, restarts: Any, down: int, say: Callable[[str], None]) -> None:
        """Take one iteration's counts.

        Args:
            restarts: RLlib's ``num_remote_worker_restarts`` (a run total; None or junk count as no change).
            down: remote runners out of service now.
            say: prints one console line.
        """
        total = restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else self.restarts
        new, self.restarts = max(0, total - self.restarts), max(total, self.restarts)
        failures = self.restarts + max(0, down)
        if new:
            self._untold += new
            now = self.clock()
            if self._last_line is None:
                self._last_line, self._untold = now, 0
                say(f"rllib: an env runner failed and was restarted ({self.restarts} of "
                    f"rllib.max_runner_restarts={self.budget}): {self.last_error()}; further restarts are "
                    f"summarised every {self.window:g} s; see env/runner_restarts in TensorBoard")
            elif now - self._last_line >= self.window:
                self._summary(say, f"in the last {now - self._last_line:.0f} s")
                self._last_line = now
        if failures > self.budget:
            if self._untold:
                self._summary(say, "since the last line")
            env_said = logged_env_error()
            raise EnvFailure(
                f"the RLlib env runners kept failing: {failures} failures, past the budget of "
                f"rllib.max_runner_restarts={self.budget} restarts for the whole run; last error: "
                f"{self.last_error()}{f' (its log: {env_said})' if env_said else ''}; "
                "a runner fails when its process dies or its sample() raises (the env, "
                f"or the model's forward); its own output is in {logs_dir()}; fix the env or the model, "
                "or raise rllib.max_runner_restarts if failures are rare and expected")

    def _summary(self, say: Callable[[str], None], when: str) -> None:
        n, self._untold = self._untold, 0
        say(f"rllib: {n} env-runner restart{'s' if n > 1 else ''} {when} ({self.restarts} of "
            f"rllib.max_runner_restarts={self.budget}); last error: {self.last_error()}")
