"""The self-play league across remote RLlib env runners (issue 31 §4, ``rllib.num_env_runners`` > 0).

The driver's :class:`~agents.run.selfplay.league.League` stays the league: members, ratings, snapshots in the
run dir, state files, resume and TensorBoard names. Each remote env runner keeps a :class:`Replica`: a League
of its own that holds the driver's members and ratings and draws the opponents of its envs with the League's
own draw (one copy of the sampling), from its own RNG seeded by (run seed, runner index). Before every
``algo.train()`` the driver's :class:`RemoteLeague` sends each runner a :class:`LeagueUpdate` through
``foreach_env_runner``: the members with their ratings and scores (what the draw weighs), and the checkpoint
bytes of every opponent that plays from a file and was not sent before (a new snapshot, a fixed opponent's
checkpoint). Nothing is read from the driver's disk on a runner, so the run dir need not be shared: the
runner writes the bytes to a file of its own temp dir and loads it through the driver's inference loader
(:func:`~agents.run.selfplay.opponents.loader`: safetensors, no pickle, nothing of the checkpoint runs). A
runner that lacks an opponent's bytes (restarted by RLlib's fault tolerance) says so, and gets them at once.

The game results come back through RLlib's metrics (agents/rllib/selfplay.py). Games in progress when a run
resumes start afresh on the runners (an RLlib resume is not exact anyway).
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agents.rllib.selfplay import runner_envs
from agents.run.selfplay.league import League, Member
from agents.run.selfplay.opponents import loader, observation_view, seat_of
from agents.run.selfplay.plumbing import attach
from envs.errors import UserError

if TYPE_CHECKING:
    from agents.config import RunConfig
    from agents.run.resolved import ResolvedEnv
    from envs.selfplay import Opponent

REPLICA = "_nondiff_league"
"""The attribute of a remote env runner that holds its :class:`Replica`."""


@dataclass(frozen=True)
class LeagueUpdate:
    """What the driver sends a remote env runner: the league's members as they stand, and checkpoint bytes."""

    seed: int
    """The run's seed (a runner's draw is seeded by it and the runner's index)."""
    members: tuple[Member, ...]
    """Every member with its rating, games and score (the prioritised draw weighs the learner's score)."""
    files: tuple[str, ...]
    """The members that play from a checkpoint file (snapshots, fixed checkpoints); the rest are scripted."""
    blobs: dict[str, bytes]
    """The safetensors bytes of those not sent before, by member name."""


class Replica:
    """A remote env runner's copy of the league: the driver's members, drawn from by the League's own draw.

    Args:
        cfg: the run's config (the env runner's ``env_config``).
        env: the resolved env (the env runner's ``env_config``).
        seed: the run's seed.
        index: the env runner's index (1, 2, ...).
        view: the runner's envs' observation view (how an opponent sees the other seat).
    """

    def __init__(self, cfg: RunConfig, env: ResolvedEnv, seed: int, index: int, view: Any) -> None:
        self._load = loader(cfg, env, view)
        self.league = League(Path("league"), cfg.selfplay, seed, _not_shipped)
        self.league.rng = np.random.default_rng([seed, index])
        self.built: dict[str, Opponent] = {}

    def update(self, update: LeagueUpdate) -> list[str]:
        """Build the opponents of the new bytes and take the members; those whose bytes this runner lacks
        are left out of the draw and returned (the driver sends them)."""
        for name, blob in update.blobs.items():
            if name not in self.built:
                self.built[name] = self._from_bytes(name, blob)
        missing = [n for n in update.files if n not in self.built]
        self.league.adopt([m for m in update.members if m.name not in missing], dict(self.built))
        return missing

    def _from_bytes(self, name: str, blob: bytes) -> Opponent:
        """A checkpoint's opponent from its bytes, through a file of this runner's own temp dir."""
        with tempfile.TemporaryDirectory(prefix="nondiff-league-") as tmp:
            path = Path(tmp) / f"{name}.safetensors"
            path.write_bytes(blob)
            return self._load(path, name)


def _not_shipped(path: Path, name: str) -> Opponent:
    """A replica's loader of last resort: it never reads a file (the update leaves such members out)."""
    raise UserError(f"self-play league replica: opponent {name!r} was not sent to this env runner")


def apply_update(runner: Any, update: LeagueUpdate) -> tuple[int, list[str]]:
    """Run in a remote env runner: update its replica (made at the first update) and hand the replica's draw
    to the runner's envs; the runner's index and the members whose bytes it lacks."""
    replica: Replica | None = getattr(runner, REPLICA, None)
    envs = runner_envs(runner)
    if replica is None:
        from agents.config import RunConfig as _RunConfig

        env_config = runner.config.env_config
        view = observation_view(envs[0]) if envs else (lambda obs: obs)
        replica = Replica(_RunConfig.model_validate(env_config["cfg"]), env_config["env"], update.seed,
                          int(runner.worker_index), view)
        setattr(runner, REPLICA, replica)
    missing = replica.update(update)
    for env in envs:  # each time: an env the runner rebuilt after a failure gets the draw again
        seat = seat_of(env)
        if seat is not None:
            attach(seat, replica.league)
    return int(runner.worker_index), missing


class RemoteLeague:
    """The driver's side: sends the league to the remote env runners (see the module docstring).

    Args:
        group: the algorithm's ``env_runner_group``.
        league: the driver's league.
        seed: the run's seed.

    The league's fixed opponents were loaded (and a bad checkpoint refused in one line) when it started
    (agents/run/selfplay/plumbing.py), before this reads their bytes.
    """

    def __init__(self, group: Any, league: League, seed: int) -> None:
        self.group, self.league, self.seed = group, league, seed
        self._sent: set[str] = set()
        self._fixed: dict[str, bytes] = {}
        for name in list(league.members):
            path = league.source_file(name)
            if path is not None:
                self._fixed[name] = path.read_bytes()

    def push(self) -> int:
        """Send every healthy remote runner the league as it stands; the bytes sent (each file once, and
        again to a runner that lost it)."""
        members = tuple(Member(**m) for m in self.league.state()["members"])
        files = tuple(m.name for m in members if self.league.source_file(m.name) is not None)
        new = {n: self._bytes(n) for n in files if n not in self._sent}
        results = self._send(LeagueUpdate(self.seed, members, files, new), None)
        self._sent |= set(new)
        size = sum(map(len, new.values())) * len(results)
        for index, missing in results:
            if missing:
                blobs = {n: self._bytes(n) for n in missing}
                self._send(LeagueUpdate(self.seed, members, files, blobs), [index])
                size += sum(map(len, blobs.values()))
        return size

    def _bytes(self, name: str) -> bytes:
        if name in self._fixed:
            return self._fixed[name]
        path = self.league.source_file(name)
        assert path is not None
        return path.read_bytes()

    def _send(self, update: LeagueUpdate, ids: list[int] | None) -> list[tuple[int, list[str]]]:
        return list(self.group.foreach_env_runner(functools.partial(apply_update, update=update),
                                                  local_env_runner=False, remote_worker_ids=ids))
