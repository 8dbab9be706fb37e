"""RLlib training state that nondiff checkpoints carry as tensors plus JSON: observation filter and optimiser.

RLlib's own checkpoints pickle this state; here it is split into arrays (saved as safetensors tensors) and
plain values (saved in the JSON header), and written back into a running algorithm on ``--resume``.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np
import torch

CLIP_OBS = 10.0  # MeanStdFilter's clip_by_value; SB3's VecNormalize clips at 10 too
OBS_EPS = 1e-6   # RLlib's SMALL_NUMBER, which MeanStdFilter adds to the std

ObsStats = tuple[float, np.ndarray, np.ndarray]
"""(count, mean, sum of squared deviations) of a running observation filter."""


def obs_filter(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    """The env-to-module connector for ``normalize_obs``: running mean/std, clipped to ±CLIP_OBS."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    return MeanStdFilter(clip_by_value=CLIP_OBS)


def normalize(obs: np.ndarray, stats: ObsStats) -> np.ndarray:
    """Exactly MeanStdFilter's transform, without Ray (evaluate.py)."""
    n, mean, sum_sq = stats
    std = np.sqrt(np.maximum(sum_sq / (n - 1), 0.0)) if n > 1 else np.zeros_like(mean)
    return np.clip((obs - mean) / (std + OBS_EPS), -CLIP_OBS, CLIP_OBS)


def read_obs_filter(algo: Any) -> ObsStats | None:
    """The filter statistics merged from all env runners, held by the local env runner after each
    iteration."""
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    runner = algo.env_runner_group.local_env_runner
    for piece in getattr(getattr(runner, "_env_to_module", None), "connectors", ()):
        if isinstance(piece, MeanStdFilter) and piece._filters:
            rs = piece._filters[None].running_stats
            return (float(rs.num_pushes), np.array(rs.mean_array, dtype=np.float64),
                    np.array(rs.sum_sq_diff_array, dtype=np.float64))
    return None


def write_obs_filter(algo: Any, stats: ObsStats) -> None:
    """Restore the filter in every env runner; their per-runner delta buffers start empty."""
    from ray.rllib.core import COMPONENT_ENV_TO_MODULE_CONNECTOR
    from ray.rllib.utils.filter import RunningStat

    n, mean, sum_sq = stats
    rs = RunningStat(mean.shape)
    rs.num_pushes, rs.mean_array, rs.sum_sq_diff_array = int(n), mean.copy(), sum_sq.copy()
    state = {"MeanStdFilter": {None: {"shape": np.array(mean.shape), "de_mean_to_zero": True,
                                      "de_std_to_one": True, "clip_by_value": CLIP_OBS,
                                      "running_stats": [rs.to_state()]}}}
    algo.env_runner_group.foreach_env_runner(
        lambda r: r.set_state({COMPONENT_ENV_TO_MODULE_CONNECTOR: state}), local_env_runner=True)


def save_obs_stats(stats: ObsStats, tensors: dict[str, torch.Tensor], norm_reward: bool) -> dict[str, Any]:
    """Add the filter's arrays to ``tensors``; return its JSON part."""
    n, mean, sum_sq = stats
    tensors["norm/obs_mean"], tensors["norm/obs_sum_sq"] = torch.as_tensor(mean), torch.as_tensor(sum_sq)
    return {"norm_obs": True, "norm_reward": norm_reward, "obs_count": n, "clip_obs": CLIP_OBS,
            "epsilon": OBS_EPS, "filter": "ray.rllib MeanStdFilter"}


def load_obs_stats(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> ObsStats | None:
    """The inverse of :func:`save_obs_stats` (None when the run did not normalise)."""
    norm = meta.get("normalize") or {}
    if not norm.get("norm_obs"):
        return None
    return (float(norm["obs_count"]), tensors["norm/obs_mean"].double().numpy(),
            tensors["norm/obs_sum_sq"].double().numpy())


def sb3_init(weights: dict[str, Any], log_std_init: float, seed: int) -> dict[str, np.ndarray]:
    """SB3's ``ortho_init`` for a PPO or APPO RLModule state: orthogonal hidden layers, convolutions included
    (gain √2), policy output 0.01, value output 1, zero biases, and ``log_std_init`` for a free log std."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in weights.items():
        t = torch.as_tensor(np.asarray(value)).clone()
        if name.endswith(".weight") and t.ndim >= 2:  # a conv's (out, in, h, w) is flattened per output
            gain = 0.01 if name.startswith("pi.") else 1.0 if name.startswith("vf.") else 2**0.5
            torch.nn.init.orthogonal_(t, gain=gain, generator=gen)
        elif name.endswith(".bias"):
            t.zero_()
        elif name == "pi.log_std":
            t.fill_(log_std_init)
        out[name] = t.numpy()
    for name in out:  # APPO's target policy (``_old_encoder``, ``_old_pi``) starts as a copy of the policy
        if name.startswith("_old_") and name[len("_old_"):] in out:
            out[name] = out[name[len("_old_"):]].copy()
    return out


# -- SAC's entropy coefficient -----------------------------------------------------------------------------
def read_log_alpha(algo: Any, module: str = "default_policy") -> torch.Tensor:
    """SAC's learned log α: a learner attribute that RLlib keeps outside the module and optimiser states."""
    results = algo.learner_group.foreach_learner(
        lambda learner: learner.curr_log_alpha[module].detach().cpu().clone())
    return torch.as_tensor(next(iter(results)).get())


def write_log_alpha(algo: Any, value: torch.Tensor, module: str = "default_policy") -> None:
    """Set SAC's log α in every learner (the alpha optimiser's Adam moments come with the optimiser state)."""
    def _set(learner: Any) -> None:
        with torch.no_grad():
            learner.curr_log_alpha[module].copy_(value.to(learner.curr_log_alpha[module].device))

    for result in algo.learner_group.foreach_learner(_set):
        result.get()


# -- optimiser ---------------------------------------------------------------------------------------------
def _split(tree: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Arrays go to ``tensors`` under their path; what remains is JSON, with {"$tensor": path} where they
    were."""
    if isinstance(tree, dict):
        return {str(k): _split(v, f"{prefix}/{k}", tensors) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_split(v, f"{prefix}/{i}", tensors) for i, v in enumerate(tree)]
    if isinstance(tree, (np.ndarray, torch.Tensor)):
        tensors[prefix] = torch.as_tensor(np.asarray(tree) if isinstance(tree, np.ndarray) else tree.cpu())
        return {"$tensor": prefix}
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _join(tree: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(tree, dict):
        if set(tree) == {"$tensor"}:
            return tensors[tree["$tensor"]].numpy()
        # torch optimisers key their per-parameter state by integer ids
        return {int(k) if k.isdigit() else k: _join(v, tensors) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_join(v, tensors) for v in tree]
    return tree


def save_optimizer(algo: Any, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The learner's optimiser state (Adam moments, step counts, param groups): arrays to ``tensors``, rest
    JSON."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER

    state = algo.learner_group.get_state(components=f"{COMPONENT_LEARNER}/{COMPONENT_OPTIMIZER}")
    return _split(state[COMPONENT_LEARNER][COMPONENT_OPTIMIZER], "optim", tensors)


def load_optimizer(algo: Any, tensors: dict[str, torch.Tensor], skeleton: dict[str, Any]) -> None:
    """Write a :func:`save_optimizer` state back into every learner."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_OPTIMIZER

    algo.learner_group.set_state({COMPONENT_LEARNER: {COMPONENT_OPTIMIZER: _join(skeleton, tensors)}})


# -- reward scaling ----------------------------------------------------------------------------------------
class ScaleReward(gym.Wrapper):  # type: ignore[type-arg]
    """SB3 VecNormalize's reward scaling for one env inside an RLlib env runner.

    The reward is divided by the running std of the discounted return and clipped to ±``clip``. The raw
    episode return is reported in ``info["nondiff_raw_return"]`` at the episode's end, so the logged
    ``rollout/ep_rew_mean`` stays the env's own. Statistics are per env and are not checkpointed: they
    settle again within a few episodes after a resume.
    """

    def __init__(self, env: gym.Env, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        super().__init__(env)
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.ret, self.raw = 0.0, 0.0
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0  # SB3's RunningMeanStd start

    def reset(self, **kwargs: Any) -> Any:
        self.ret, self.raw = 0.0, 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> Any:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.raw += float(reward)
        self.ret = self.ret * self.gamma + float(reward)
        delta, total = self.ret - self.mean, self.count + 1
        self.mean += delta / total
        self.var = (self.var * self.count + delta**2 * self.count / total) / total
        self.count = total
        scaled = float(np.clip(reward / np.sqrt(self.var + self.epsilon), -self.clip, self.clip))
        if terminated or truncated:
            info = {**info, "nondiff_raw_return": self.raw}
            self.ret = 0.0
        return obs, scaled, terminated, truncated, info


class ScaleRewards(gym.vector.VectorWrapper):
    """:class:`ScaleReward` for each env of a vector env in NEXT_STEP order (K-instance bridge programs,
    envs/vector/next_step.py): the same statistics per env; a step an env sat out leaves them alone."""

    def __init__(self, env: gym.vector.VectorEnv, gamma: float, clip: float = 10.0,
                 epsilon: float = 1e-8) -> None:
        super().__init__(env)
        n = self.num_envs
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.ret, self.raw = np.zeros(n), np.zeros(n)
        self.count, self.mean, self.var = np.full(n, 1e-4), np.zeros(n), np.ones(n)

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        mask = (options or {}).get("reset_mask")
        chosen = slice(None) if mask is None else np.asarray(mask, dtype=bool)
        self.ret[chosen], self.raw[chosen] = 0.0, 0.0
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        from envs.vector.base import add_info

        obs, reward, terminated, truncated, infos = self.env.step(actions)
        r = np.asarray(reward, dtype=np.float64)
        live = ~self.env.unwrapped.skipped  # below NextStep: the bridge vector env's
        self.raw[live] += r[live]
        self.ret[live] = self.ret[live] * self.gamma + r[live]
        delta, total = self.ret - self.mean, self.count + 1
        self.mean[live] += delta[live] / total[live]
        self.var[live] = ((self.var * self.count + delta**2 * self.count / total) / total)[live]
        self.count[live] = total[live]
        scaled = np.where(live, np.clip(r / np.sqrt(self.var + self.epsilon), -self.clip, self.clip), 0.0)
        ended = np.asarray(terminated) | np.asarray(truncated)
        for i in np.flatnonzero(ended):
            infos = add_info(infos, {"nondiff_raw_return": float(self.raw[i])}, int(i), self.num_envs)
        self.ret[ended], self.raw[ended] = 0.0, 0.0
        return obs, scaled.astype(np.float32), terminated, truncated, infos


def batched_programs(cfg: Any, env: Any, num_envs: int) -> gym.vector.VectorEnv:
    """An env runner's ``num_envs`` envs of K-instance bridge programs (started and listened for on its own
    node's loopback): one batched vector env (envs/vector/bridge.py) in the NEXT_STEP order RLlib's env
    runners expect (envs/vector/next_step.py), its rewards scaled per env where the config says so."""
    from gymnasium.vector import AutoresetMode

    from agents.run.envfactory import env_factory, make_vector_env
    from envs.vector.next_step import NextStep
    from envs.vector.sync import SyncVectorEnv

    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_envs": num_envs})})
    built = make_vector_env(cfg, env)
    if not hasattr(built.unwrapped, "skip"):  # one instance per program after all (a resume does not probe K)
        built.close()
        scale = functools.partial(ScaleReward, gamma=cfg.agent.gamma) if cfg.agent.normalize_reward else None
        return SyncVectorEnv([env_factory(cfg, env, outer=scale)] * num_envs, AutoresetMode.NEXT_STEP)
    venv: gym.vector.VectorEnv = NextStep(built)
    return ScaleRewards(venv, cfg.agent.gamma) if cfg.agent.normalize_reward else venv
