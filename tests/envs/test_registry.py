"""The env registry: name forms, suggestions, and registrations inside worker processes."""

from __future__ import annotations

import multiprocessing as mp

import gymnasium as gym
import pytest

import envs
from envs.errors import UnknownEnvError


def test_short_name_resolves_to_gym_id():
    spec = envs.resolve("robot")
    assert spec.gym_id == "nondiff/Robot-v0"
    assert spec.gym_id in gym.registry


def test_gymnasium_id_and_module_class_forms():
    assert envs.resolve("CartPole-v1").gym_id == "CartPole-v1"
    spec = envs.resolve("envs.adapters.robot:RobotEnv")
    env = gym.make(spec.gym_id, max_episode_steps=5)
    assert env.observation_space.shape == (14,)
    env.close()


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownEnvError, match="did you mean 'robot'"):
        envs.resolve("robto")


def test_register_public_api():
    spec = envs.register("tiny-reach", "envs.adapters.robot:RobotEnv", kwargs={"frame_skip": 1},
                         max_episode_steps=7)
    env = envs.make("tiny-reach")
    env.reset(seed=0)
    steps = 0
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        steps += 1
        done = term or trunc
    assert spec.gym_id == "nondiff/tiny-reach-v0" and steps == 7
    env.close()


def _make_in_worker(queue):
    env = envs.make("robot")
    obs, _ = env.reset(seed=3)
    queue.put(obs.shape)
    env.close()


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_registration_holds_in_fresh_worker_processes(method):
    ctx = mp.get_context(method)
    queue = ctx.Queue()
    proc = ctx.Process(target=_make_in_worker, args=(queue,))
    proc.start()
    shape = queue.get(timeout=60)
    proc.join(60)
    assert proc.exitcode == 0 and shape == (14,)
