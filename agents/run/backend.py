"""The backend interface the one training loop drives, and the table that picks a backend by name.

A backend (agents/sb3/, agents/rllib/, agents/blackbox/) implements :class:`Backend`; the run layer calls it
and never imports one: :func:`get_backend` imports the class that :data:`BACKENDS` names, lazily, so
``import agents.run`` never imports Ray or stable-baselines3.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from envs.errors import UserError

if TYPE_CHECKING:
    from typing import Self

    import numpy as np

    from agents.config import RunConfig
    from agents.run.checkpoint import Checkpoint
    from agents.run.resolved import ResolvedEnv
    from agents.run.session import Session

__all__ = ["AGENTS_BACKENDS", "BACKENDS", "POLICY_MAP_BACKENDS", "Backend", "Iteration", "get_backend",
           "resolve_device"]

# Backend name -> "module:Class"; RL Zoo's ALGOS, one level up.
BACKENDS: dict[str, str] = {
    "sb3": "agents.sb3.backend:SB3Backend",
    "rllib": "agents.rllib.backend:RLlibBackend",
    "blackbox": "agents.blackbox.backend:BlackBoxBackend",
}
POLICY_MAP_BACKENDS: dict[str, str] = {
    "sb3": "agents.sb3.multipolicy:MultiPolicyBackend",
    "rllib": "agents.rllib.multipolicy:RLlibAgentsBackend",
}
"""The backend that trains a ``policies:`` map (several policies on a PettingZoo parallel env), by backend
name."""
AGENTS_BACKENDS: dict[str, str] = {
    "rllib": "agents.rllib.multipolicy:RLlibAgentsBackend",
}
"""Where a PettingZoo parallel env's agents train on another class than the backend's own even with one
shared policy (RLlib's multi-agent API), by backend name."""


@dataclass
class Iteration:
    """What one :meth:`Backend.advance` did.

    Attributes:
        step: the global env step reached.
        ep_rew_mean: the latest mean raw episode return, when an episode has ended.
        scalars: metrics to log at ``step`` that the backend did not log itself (``rollout/…``, ``train/…``).
    """

    step: int
    ep_rew_mean: float | None = None
    scalars: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """What the training loop (:mod:`agents.run.loop`), train.py and evaluate.py need from a backend.

    Signatures are modelled on SB3. A backend collects and updates (:meth:`advance`), saves and predicts;
    the loop owns the schedule (evaluation, checkpoints, metrics, signals, budget).

    Attributes:
        seed: the run's seed.
        num_timesteps: global env steps trained so far (the resumed step included).
        channels_first: the backend's networks take images as (C, H, W) (SB3's CNNs); envs are built so.
        batches_programs: the backend steps K-instance programs as batched vector envs (envs/vector/bridge.py;
            SB3 one for the run, RLlib one per env runner, which starts and listens for its own programs);
            others drive one instance per program.
        takes_connections: connect mode (``env.listen`` without ``env.command``: programs started elsewhere
            connect to the run) trains on this backend.
        masking_algos: the algorithms that act only on the legal actions of an env that gives action masks
            (``env.action_mask``, agents/run/masks.py); a masked env with any other exits 2.
        pettingzoo: the PettingZoo APIs it trains: ``parallel`` (a parallel env's agents, shared or mapped by
            ``policies:``), ``aec`` (a turn-based game, by self-play); any other exits 2.
        builds_net_arch: its models are networks of ``agent.net_arch`` layers (the runner bounds their memory
            before they are built); a black-box strategy's networks are its own.
    """

    seed: int
    num_timesteps: int
    channels_first: ClassVar[bool] = False
    batches_programs: ClassVar[bool] = False
    takes_connections: ClassVar[bool] = False
    masking_algos: ClassVar[tuple[str, ...]] = ()
    pettingzoo: ClassVar[tuple[str, ...]] = ()
    builds_net_arch: ClassVar[bool] = True

    @classmethod
    @abstractmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv) -> Self:
        """Build envs and a fresh model for training, for the env the runner resolved once (``env``)."""

    def attach(self, session: Session) -> None:  # noqa: B027 - optional hook
        """Called once before the first :meth:`advance`, with ``session.writer`` open."""

    @abstractmethod
    def advance(self, until: int, session: Session) -> Iteration:
        """Collect and update: at least one iteration, stopping at or after global step ``until``.

        A backend returns after one iteration when it can (so the loop logs each one), calls
        ``session.tick`` on the vector steps it sees (health, progress, stop requests) and stops early
        when that returns False.
        """

    @abstractmethod
    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """The action for one raw (unnormalised) observation; a stacked batch gives a batch of actions."""

    def action_probs(self, obs: Any, legal: np.ndarray) -> np.ndarray | None:
        """The policy's probability of each action for a batch of raw observations, zero where ``legal``
        (one row of flags per observation) is False; None where the backend cannot give them (a Discrete
        action space only). A self-play opponent samples its moves from them (agents/run/selfplay/)."""
        return None

    @abstractmethod
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """Write a complete, atomically written checkpoint to ``path``."""

    @classmethod
    @abstractmethod
    def load(cls, ckpt: Checkpoint, cfg: RunConfig, env: ResolvedEnv, *, for_training: bool = False,
             seed: int = 0) -> Self:
        """Restore from a checkpoint the runner read once (``ckpt``: its typed header and its tensors):
        the policy only for evaluation, everything for training."""

    def train_envs(self) -> list[Any]:
        """The training envs when they live in this process (each the top of its wrapper stack), else
        ``[]``: where the self-play league hands each env its opponents (agents/run/selfplay/)."""
        return []

    def envs_elsewhere(self, cfg: RunConfig) -> str:
        """Where the training envs are stepped when :meth:`train_envs` is ``[]``, and how to bring them into
        this process (the end of a one-line error)."""
        return (f"train.vec_env {cfg.train.vec_env!r} steps its envs elsewhere: set train.vec_env: dummy "
                "(or thread)")

    def host_league(self, league: Any) -> bool:
        """Take the self-play league (agents/run/selfplay/) to training envs stepped in other processes,
        when :meth:`train_envs` is ``[]``: True where the backend keeps a replica of it beside them
        (agents/rllib/league_remote.py), False where it cannot (the default)."""
        return False

    def bind_env(self, env: Any) -> None:  # noqa: B027 - optional hook
        """Called with the env :meth:`predict` will act in (evaluation); a backend that answers from the env's
        state rather than the observation alone (``blackbox``) keeps it."""

    def eval_report(self) -> dict[str, float]:
        """Extra scalars of the evaluation since :meth:`bind_env` (``blackbox``: forward calls per
        instance)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release envs and workers."""


def get_backend(name: str, policies: bool = False, agents: bool = False) -> type[Backend]:
    """The backend class registered under ``name``; with ``policies`` (a ``policies:`` map), the one of
    :data:`POLICY_MAP_BACKENDS`; for a PettingZoo parallel env's agents (``agents``), the one of
    :data:`AGENTS_BACKENDS` where there is one."""
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if policies and name not in POLICY_MAP_BACKENDS:
        raise UserError(f"policies: (several policies) runs on --backend {' or '.join(POLICY_MAP_BACKENDS)}, "
                        f"not on {name}")
    table = (POLICY_MAP_BACKENDS if policies else AGENTS_BACKENDS if agents and name in AGENTS_BACKENDS
             else BACKENDS)
    module, _, cls = table[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise UserError(f"backend {name!r} is not available here ({e}); install nondiff with its "
                        "dependencies") from e
    return getattr(mod, cls)


def resolve_device(device: str) -> str:
    """``train.device`` for a torch backend: ``auto`` → cuda when available, else cpu.

    Raises:
        UserError: ``cuda`` asked for, and this torch build sees no CUDA device.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this torch build sees no CUDA device; use --device cpu, or install a "
                        "CUDA torch (make TORCH=torch)")
    return device
