"""Framework-neutral vector envs on Gymnasium's vector API (same-step auto-reset), and the vector wrappers.

Vector envs, one class per file:

- :mod:`envs.vector.base`: what they share (lossless batched infos, per-env calls by index);
- :mod:`envs.vector.sync`: in-process envs stepped in turn (``train.vec_env: dummy``);
- :mod:`envs.vector.threads`: in-process envs, a thread each (``thread``; with ``NEXT_STEP`` auto-reset inside
  RLlib's env runners);
- :mod:`envs.vector.subproc`: a worker process each, with the watchdog (``subproc``);
- :mod:`envs.vector.threadproc`: threads in several worker processes, with the watchdog (``threadproc``);
  both supervise their workers with :mod:`envs.vector.workers`;
- :mod:`envs.vector.bridge`: M bridge programs × K instances, or connect mode, batched; built, with its
  wrappers, by :mod:`envs.vector.bridge_start`;
- :mod:`envs.vector.ale`: ALE's C++ vector env (``ale``);
- :mod:`envs.vector.pettingzoo`: copies of a PettingZoo parallel env, one slot per agent (parameter sharing),
  over :mod:`envs.vector.parallel_copies`; :mod:`envs.vector.pettingzoo_groups`: the same split by policy
  (``policies:``), one vector env per policy, stepped in lock-step.

Vector wrappers, applied once around any of them:

- :mod:`envs.vector.batch_guard`: the Guard's checks once per vector step, for envs that have their own Guard;
- :mod:`envs.vector.row_guard`: the Guard itself, over a batch of envs that have none (bridge, ALE);
- :mod:`envs.vector.time_limit`: ``env.max_episode_steps`` for the same;
- :mod:`envs.vector.episode_stats`: each episode's return, length and time.

:mod:`envs.vector.resume` reads and restores the in-process envs' mid-episode state for an exact resume.
agents/run/envfactory.py builds the stack for a run; a backend adapts it in one file (agents/sb3/vector.py).
"""
