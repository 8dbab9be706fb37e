"""Backend-neutral policy evaluation: run N seeded episodes and summarise them, as typed records.

:func:`run_episodes` returns :class:`Episodes` (the per-episode lists and their :class:`EvalSummary`); the
periodic evaluation writes the summary to ``evaluations.jsonl`` and TensorBoard, and ``evaluate.py`` builds
an :class:`EvaluationReport` (trained and random), which becomes a dict only when written as JSON.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from envs.faults import faults_in

Policy = Callable[[Any], np.ndarray]
DEFAULT_CAP = 27_000
"""Steps after which an evaluation episode of an env without a time limit is cut (ALE's 108,000 frames at
frame skip 4): a policy that repeats an illegal move in an env that never ends must not hang evaluation."""
HEARTBEAT = 10_000
"""Steps of one evaluation episode between two "still running" lines."""


@dataclass(frozen=True)
class EvalSummary:
    """What N episodes of one policy scored (a line of ``evaluations.jsonl``)."""

    mean_reward: float
    std_reward: float
    min_reward: float
    max_reward: float
    mean_length: float
    success_rate: float | None
    """From the last step's ``info["is_success"]`` (or ``info["success"]``); None where no episode had one."""
    metrics: dict[str, float]
    """The mean of each scalar an adapter reports in ``info["episode_metrics"]`` on an episode's last step."""
    episodes: int
    capped: int = 0
    """Episodes cut at the step cap (:func:`episode_cap`); their returns are partial."""

    def to_json(self) -> dict[str, Any]:
        """The summary as a JSON-ready dict (the keys of ``evaluations.jsonl``)."""
        return asdict(self)


@dataclass(frozen=True)
class Episodes:
    """The episodes :func:`run_episodes` played: per-episode lists and their summary."""

    returns: list[float]
    lengths: list[int]
    successes: list[bool | None]
    summary: EvalSummary


@dataclass(frozen=True)
class EvaluationReport:
    """What ``evaluate.py`` found: the trained policy and a uniform-random one on the same seeds."""

    checkpoint: str
    step: int | None
    trained: EvalSummary
    random: EvalSummary
    extra: dict[str, Any] = field(default_factory=dict)
    """The backend's own figures (e.g. forward calls per instance of a black-box strategy)."""

    def to_json(self) -> dict[str, Any]:
        """The JSON ``evaluate.py --json`` writes (its keys are a published format: keep them)."""
        t, r = self.trained, self.random
        return {"mean_return": t.mean_reward, "std_return": t.std_reward, "min_return": t.min_reward,
                "max_return": t.max_reward, "mean_length": t.mean_length, "success_rate": t.success_rate,
                "episodes": t.episodes, "capped_episodes": t.capped, "random_mean_return": r.mean_reward,
                "checkpoint": self.checkpoint,
                "random": {k: getattr(r, k) for k in ("mean_reward", "std_reward", "min_reward", "max_reward",
                                                      "mean_length", "success_rate")},
                "metrics": t.metrics, "random_metrics": r.metrics, "step": self.step, **self.extra}


def episode_cap(env: gym.Env, configured: int | None) -> int:
    """``eval.max_episode_steps`` when set, else the env's own time limit, else :data:`DEFAULT_CAP`."""
    if configured is not None:
        return configured
    limit = getattr(env.spec, "max_episode_steps", None) if env.spec is not None else None
    return int(limit) if limit else DEFAULT_CAP


def one_action(action: Any) -> Any:
    """A policy's action for one env as a vector env hands it to its sub-envs: a 0-d array becomes a NumPy
    scalar (``action[()]``). Some envs read a 0-d array as another action: ViZDoom takes ``np.array(2)`` for a
    button vector (an attack every step) but ``np.int64(2)`` for action 2, which is what training sent."""
    return action[()] if isinstance(action, np.ndarray) and action.ndim == 0 else action


def run_episodes(env: gym.Env, policy: Policy, episodes: int, seed: int,
                 on_frame: Callable[[Any], None] | None = None, *, max_steps: int = DEFAULT_CAP,
                 say: Callable[[str], None] | None = None) -> Episodes:
    """Play ``episodes`` episodes with seeds ``seed, seed+1, …`` and summarise them.

    Args:
        env: a single (not vectorised) env; its raw rewards are what is reported.
        policy: maps one raw observation to one action.
        episodes: how many episodes.
        seed: seed of the first episode.
        on_frame: called with ``env.render()`` after reset and every step (for video).
        max_steps: an episode still running after this many steps is cut there (:func:`episode_cap`).
        say: prints a console line: every :data:`HEARTBEAT` steps of a long episode, and once for the cut.

    Returns:
        The per-episode returns, lengths and successes, and their :class:`EvalSummary`.
    """
    returns: list[float] = []
    lengths: list[int] = []
    successes: list[bool | None] = []
    capped = 0
    faulted: list[str] = []  # per episode ended by an env fault (a crash, garbage cut short): its detail
    metrics: dict[str, list[float]] = {}
    for ep in range(episodes):
        obs, info = env.reset(seed=seed + ep)
        if on_frame is not None:
            on_frame(env.render())
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(one_action(policy(obs)))
            total += float(reward)
            length += 1
            done = terminated or truncated
            if on_frame is not None:
                on_frame(env.render())
            if not done and length >= max_steps:
                done, capped = True, capped + 1
            elif say is not None and not done and length % HEARTBEAT == 0:
                say(f"evaluation episode {ep + 1}/{episodes}: {length:,} steps so far, no end yet (cut at "
                    f"{max_steps:,})")
        returns.append(total)
        lengths.append(length)
        successes.append(success_of(info))
        ended_by = [f for f in faults_in(info) if not f.clipped] if truncated else []
        if ended_by:
            faulted.append(f"{ended_by[-1].kind.value}: {ended_by[-1].detail}")
        for key, value in (info.get("episode_metrics") or {}).items():
            metrics.setdefault(str(key), []).append(float(value))
    known = [s for s in successes if s is not None]
    if faulted and say is not None:
        say(f"{len(faulted)} of {episodes} evaluation episodes ended on an env fault, not by the env's own "
            f"end (e.g. {faulted[0]}); their returns are partial: fix the env (python -m envs check lists "
            "what breaks the Gymnasium API)")
    if capped and say is not None:
        say(f"{capped} of {episodes} evaluation episodes were cut at {max_steps:,} steps (the env did not "
            "end them); their returns are partial. Set eval.max_episode_steps, or env.max_episode_steps for "
            "a time limit in training too")
    summary = EvalSummary(
        mean_reward=float(np.mean(returns)), std_reward=float(np.std(returns)),
        min_reward=float(np.min(returns)), max_reward=float(np.max(returns)),
        mean_length=float(np.mean(lengths)),
        success_rate=float(np.mean(known)) if known else None,
        metrics={k: float(np.mean(v)) for k, v in metrics.items()}, episodes=episodes, capped=capped)
    return Episodes(returns, lengths, successes, summary)


def success_of(info: dict[str, Any]) -> bool | None:
    """An episode's success from its last ``info``: ``is_success`` (SB3, nondiff) or ``success``; else
    None."""
    for key in ("is_success", "success"):
        if key in info and info[key] is not None:
            return bool(np.asarray(info[key]).any())
    return None


def eval_scalars(summary: EvalSummary) -> dict[str, float]:
    """The ``eval/…`` scalars both backends write to TensorBoard for one periodic evaluation."""
    out = {"eval/mean_reward": summary.mean_reward, "eval/mean_ep_length": summary.mean_length}
    if summary.success_rate is not None:
        out["eval/success_rate"] = summary.success_rate
    out.update({f"eval/{k}": v for k, v in summary.metrics.items()})
    return out


def random_policy(space: gym.Space, seed: int, masks: Callable[[], np.ndarray] | None = None) -> Policy:
    """A uniform-random policy on ``space``, seeded for repeatability; with ``masks`` (the env's
    ``action_masks``, one flag per move: a MultiDiscrete's per dimension, concatenated), uniform over the
    legal moves only, as the trained policy is."""
    space = copy.deepcopy(space)
    space.seed(seed)
    if masks is None:
        return lambda _obs: space.sample()
    if isinstance(space, gym.spaces.MultiDiscrete):
        cuts = np.cumsum(space.nvec.ravel())[:-1]
        return lambda _obs: space.sample(mask=tuple(np.split(np.asarray(masks(), dtype=np.int8), cuts)))
    return lambda _obs: space.sample(mask=np.asarray(masks(), dtype=np.int8))


def alone_returns(env: gym.Env, policy: Policy, names: list[str], episodes: int, seed: int, *,
                  max_steps: int = DEFAULT_CAP) -> dict[str, float]:
    """For a ``policies:`` map: each policy's mean return (its ``policy/<name>/return`` metric) when it plays
    alone, its agents acting with ``policy`` and every other policy's agents uniformly at random, on the same
    seeds as the random team: its gain over that team's figure is its own, the others held random."""
    out: dict[str, float] = {}
    for name in names:
        sample = random_policy(env.action_space, seed)

        def act(obs: Any, mine: str = name, rand: Policy = sample) -> Any:
            trained, other = policy(obs), rand(obs)
            return {k: trained[k] if k == mine else other[k] for k in trained}

        metrics = run_episodes(env, act, episodes, seed, max_steps=max_steps).summary.metrics
        out[name] = metrics.get(f"policy/{name}/return", float("nan"))
    return out
