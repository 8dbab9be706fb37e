"""Framework-neutral vector envs on Gymnasium's vector API (same-step auto-reset), and the vector wrappers.

- :mod:`envs.vector.base`: what they share (lossless batched infos, per-env calls by index);
- :mod:`envs.vector.sync`: in-process envs stepped in turn (``train.vec_env: dummy``);
- :mod:`envs.vector.threads`: in-process envs, a thread each (``thread``);
- :mod:`envs.vector.subproc`: a worker process each, with the watchdog (``subproc``;
  :mod:`envs.vector.workers` supervises the workers);
- :mod:`envs.vector.batch_guard`: the Guard's checks once per vector step (a wrapper);
- :mod:`envs.vector.episode_stats`: each episode's return, length and time (a wrapper).

A backend adapts them in one file (agents/sb3/vector.py for SB3).
"""
