"""The black-box backend: a strategy of :mod:`agents.blackbox` under the one training loop.

``train.timesteps`` and the global step count **forward calls** of the training problem (synthetic data,
surrogate fits, gradient checks, CMA-ES runs on training instances). One :meth:`BlackBoxBackend.advance` is
one training round of the strategy (a generation, or an epoch over fresh pairs). :meth:`predict` answers the
env's current instance once per episode (its forward calls counted per instance) and then returns the
actions that move the env's estimate onto that answer, so evaluate.py scores it with the adapter's own
episode metrics, next to a random policy.
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from agents.blackbox import STRATEGIES
from agents.run import checkpoint, tensorcheck, torchstart
from agents.run.backend import Backend, Iteration
from agents.run.envfactory import env_factory
from envs.errors import CheckpointError, UserError
from envs.inverse import inverse_adapters, problem_of

if TYPE_CHECKING:
    import gymnasium as gym

    from agents.blackbox.common import Strategy
    from agents.config import RunConfig
    from agents.run.resolved import ResolvedEnv
    from agents.run.session import Session

log = logging.getLogger(__name__)


class BlackBoxBackend(Backend):
    """``--backend blackbox --algo cma|amortised|surrogate|chain``: see the module docstring."""

    builds_net_arch = False

    def __init__(self, cfg: RunConfig, seed: int, env: gym.Env, strategy: Strategy, calls0: int) -> None:
        self.cfg, self.seed, self.env, self.strategy = cfg, seed, env, strategy
        self.problem = strategy.problem
        self._calls0, self._offset = calls0, 0
        self.rng = np.random.default_rng(seed)
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self._bound: Any = None
        self._answered: Any = None
        self._target = np.zeros(self.problem.param_dim)
        self.instance_calls: list[int] = []

    @classmethod
    def create(cls, cfg: RunConfig, seed: int, env: ResolvedEnv) -> BlackBoxBackend:
        """Build the env, reach its inverse problem and the strategy."""
        torchstart.start_torch(cfg.train.threads)
        torch.manual_seed(seed)
        made = env_factory(cfg, env)()
        problem = problem_of(made)
        if problem is None:
            made.close()
            raise UserError(f"--backend blackbox needs an inverse problem; env {cfg.env.id!r} is not one. "
                            f"Inverse adapters: {', '.join(inverse_adapters())} (docs/adapters.md shows how "
                            "to build your own on envs.inverse.InverseProblem)")
        if cfg.agent.algo not in STRATEGIES:
            raise UserError(f"--backend blackbox runs --algo {'|'.join(STRATEGIES)}, got {cfg.agent.algo!r}")
        module, _, name = STRATEGIES[cfg.agent.algo].partition(":")
        calls0 = problem.forward_calls
        strategy = getattr(importlib.import_module(module), name)(problem, cfg.blackbox, seed)
        return cls(cfg, seed, made, strategy, calls0)

    @property
    def num_timesteps(self) -> int:  # type: ignore[override]
        """Training forward calls so far (the resumed ones included)."""
        return self._offset + self.problem.forward_calls - self._calls0

    def advance(self, until: int, session: Session) -> Iteration:
        """One training round; logs ``blackbox/forward_calls`` and the strategy's ``train/…`` scalars."""
        scalars = self.strategy.train_round(self.rng)
        step = self.num_timesteps
        session.tick(step)
        return Iteration(step, None, {**scalars, "blackbox/forward_calls": step})

    # -- answering -----------------------------------------------------------------------------------------
    def bind_env(self, env: gym.Env) -> None:
        """Answer the instances of ``env`` (evaluation); its problem counts the calls per instance."""
        problem = problem_of(env)
        if problem is None:
            raise UserError(f"--backend blackbox evaluates inverse problems only; inverse adapters: "
                            f"{', '.join(inverse_adapters())}")
        self._bound, self._answered, self.instance_calls = env, None, []
        self.strategy.problem = problem

    def eval_report(self) -> dict[str, float]:
        """Mean forward calls per answered instance since :meth:`bind_env`."""
        return ({"forward_calls_per_instance": float(np.mean(self.instance_calls))} if self.instance_calls
                else {})

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        """Answer the bound env's instance once, then step its estimate onto the answer."""
        if self._bound is None:
            raise UserError("the blackbox backend acts through its env: call bind_env(env) before predict()")
        u = self._bound.unwrapped
        if u.instance is not self._answered:
            before = self.strategy.problem.forward_calls
            self._target = self.strategy.solve(u.instance, self.rng)
            self.instance_calls.append(self.strategy.problem.forward_calls - before)
            self._answered = u.instance
        return np.asarray(u.action_towards(self._target), dtype=np.float32)

    # -- checkpoints ---------------------------------------------------------------------------------------
    def save(self, path: Path, meta: dict[str, Any] | None = None) -> Path:
        """The strategy's tensors, the RNG states and the call counter, atomically."""
        rng_t, rng_m = checkpoint.rng_state()
        body = {**checkpoint.base_meta("blackbox", self.cfg.agent.algo, self.num_timesteps, self.seed,
                                       (self.observation_space, self.action_space),
                                       self.cfg.model_dump(mode="json")),
                "rng": rng_m, "strategy_rng": self.rng.bit_generator.state, **(meta or {})}
        return checkpoint.save(path, {**self.strategy.state(), **rng_t}, body)

    @classmethod
    def load(cls, ckpt: checkpoint.Checkpoint, cfg: RunConfig, env: ResolvedEnv, *,
             for_training: bool = False, seed: int = 0) -> BlackBoxBackend:
        """Restore the strategy (and, for training, the counters and RNG)."""
        tensors, header, meta, path = ckpt.tensors, ckpt.header, ckpt.header.extra, ckpt.path
        tensorcheck.check_blackbox(ckpt)  # every tensor, before anything is built from them
        backend = cls.create(cfg, header.seed if header.seed is not None else seed, env)
        checkpoint.check_spaces(header, backend.observation_space, backend.action_space, f"load {path}")
        try:
            backend.strategy.load_state({k: v for k, v in tensors.items() if not k.startswith("rng/")})
        except (RuntimeError, KeyError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
            detail = lines[1] if len(lines) > 1 and lines[0].startswith("Error(s) in loading") else lines[0]
            raise CheckpointError(f"checkpoint {str(path)!r} does not fit this strategy ({detail[:240]}); "
                                  "use the config it was trained with, or train it again with this version "
                                  "of nondiff") from e
        backend._offset = header.num_timesteps
        backend._calls0 = backend.problem.forward_calls
        if for_training:
            backend.rng.bit_generator.state = meta["strategy_rng"]
            checkpoint.set_rng_state(tensors, meta["rng"])
        return backend

    def close(self) -> None:
        """Close the training env."""
        self.env.close()
