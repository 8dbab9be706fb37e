"""RLlib's learner metrics reach TensorBoard under SB3's names (README: the same names on every backend)."""

from __future__ import annotations

import gymnasium as gym
from stable_baselines3 import A2C, PPO, SAC
from stable_baselines3.common.logger import KVWriter, Logger

from agents.rllib.algos import ALGOS, learner_scalars


class _Keys(KVWriter):
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def write(self, key_values, key_excluded, step=0) -> None:  # type: ignore[no-untyped-def]
        self.keys |= set(key_values)


def _sb3_train_names(cls, env_id: str, steps: int, **kw) -> set[str]:  # type: ignore[no-untyped-def]
    """The ``train/…`` names a real SB3 model logs in its first updates."""
    keys = _Keys()
    model = cls("MlpPolicy", gym.make(env_id), seed=0, device="cpu", **kw)
    model.set_logger(Logger(None, [keys]))
    model.learn(steps)
    model.logger.dump()  # an off-policy model dumps every few episodes only
    return {k for k in keys.keys if k.startswith("train/")}


def test_every_rllib_metric_is_logged_under_a_name_sb3_logs():
    ppo = _sb3_train_names(PPO, "CartPole-v1", 128, n_steps=64, batch_size=64, n_epochs=1)
    a2c_ppo = ppo | _sb3_train_names(A2C, "CartPole-v1", 16, n_steps=8)
    sac = _sb3_train_names(SAC, "Pendulum-v1", 40, learning_starts=20, batch_size=16)
    for name, algo in ALGOS.items():
        ours = {dst for _, dst in algo.metrics}
        assert ours <= (sac if name == "sac" else a2c_ppo), (name, ours - (sac if name == "sac" else a2c_ppo))
    # SB3's entropy loss is minus the mean entropy; RLlib reports the entropy itself
    got = learner_scalars(ALGOS["ppo"], {"entropy": 0.69, "policy_loss": -0.01, "total_loss": 1.5})
    assert got["train/entropy_loss"] == -0.69 and got["train/policy_gradient_loss"] == -0.01
    assert got["train/loss"] == 1.5 and got["train/value_loss"] is None  # not reported: None, not dropped
