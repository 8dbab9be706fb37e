"""The one training loop: the schedule every backend and algorithm runs under.

A backend (:class:`~agents.run.backend.Backend`) supplies ``advance`` (collect and update, at least one
iteration, towards a step), ``save`` and ``predict``. This loop owns the rest, once:
TensorBoard, env-health metrics, the progress display, periodic evaluation (and ``best/``), periodic
checkpoints and their rotation, the budget and the stop signals. Checkpoints are taken between an
update and the next collection, which is what makes an exact resume possible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents.run.envfactory import env_factory
from agents.run.evaluation import episode_cap, eval_scalars, run_episodes
from agents.run.selfplay import plumbing as selfplay
from envs.errors import EnvFailure

if TYPE_CHECKING:
    from agents.run.backend import Backend
    from agents.run.resolved import ResolvedEnv
    from agents.run.session import Session

EVAL_SEED_OFFSET = 1_000_000
"""Periodic evaluations play episodes seeded ``seed + EVAL_SEED_OFFSET, …``, apart from training's seeds."""


def train(backend: Backend, session: Session, env: ResolvedEnv, eval_env: Any = None) -> int:
    """Advance ``backend`` until the budget or a stop request; return the global step reached.

    ``eval_env``: an env to evaluate in, owned by the caller (the probe's); otherwise the first evaluation
    builds one (closed here).
    """
    session.open_writer()
    backend.attach(session)
    step = backend.num_timesteps
    made: Any = None
    league = selfplay.start(session, backend, env)  # a turn-based game's league, else None
    try:
        while step < session.total_steps and not session.should_stop:
            try:
                it = backend.advance(session.next_boundary(step), session)
            except EnvFailure:  # the run-wide restart budget is spent: record the final counts, then stop
                session.log(session.health.metrics(), backend.num_timesteps)
                raise
            step = it.step
            session.memory.look(step)  # backends whose steps run elsewhere (RLlib) do not tick per step
            session.log({**it.scalars, **session.health.metrics(), **session.memory.metrics()}, step)
            if league is not None:
                selfplay.after_iteration(league, step, backend, session)
            session.progress.update(step, it.ep_rew_mean)
            if session.should_stop:  # mid-collection: final/ is written by the caller, nothing else
                break
            if session.eval_due(step):
                if eval_env is None:
                    eval_env = made = env_factory(session.cfg, env, for_eval=True)()
                _evaluate(backend, session, eval_env, step)
            if step < session.total_steps and session.checkpoint_due(step):  # the last step goes to final/
                if league is not None:  # the league of this checkpoint, written before it: never missing
                    league.save_state(step)
                backend.save(session.run.checkpoint_path(step))
                session.run.rotate(session.cfg.train.keep_checkpoints)
                if league is not None:  # the states of the rotated-out checkpoints go with them
                    league.prune(session.run.step_checkpoints()[0][0])
    finally:
        if league is not None:  # for final/ or crash/, written at this step by the caller
            league.save_state(backend.num_timesteps)
        if made is not None:
            made.close()
        session.writer.flush()
    session.progress.update(step, None)
    return step


def _evaluate(backend: Backend, session: Session, env: Any, step: int) -> None:
    """One periodic evaluation: ``eval/…`` scalars, evaluations.jsonl and ``best/`` when it is the best."""
    cfg = session.cfg
    backend.bind_env(env)
    result = run_episodes(env, lambda o: backend.predict(o, deterministic=cfg.eval.deterministic),
                          cfg.eval.episodes, seed=backend.seed + EVAL_SEED_OFFSET,
                          max_steps=episode_cap(env, cfg.eval.max_episode_steps), say=session.say)
    summary = result.summary
    session.log({**eval_scalars(summary), **{f"eval/{k}": v for k, v in backend.eval_report().items()}}, step)
    if session.record_eval(step, summary):
        backend.save(session.run.best, {"eval": summary.to_json()})
