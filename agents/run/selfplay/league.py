"""The league of a self-play run: the learner's past snapshots and fixed opponents, who plays whom, and Elo
ratings.

The league lives in the run dir: ``league/step_<N>.safetensors`` are ordinary checkpoints of the learner
(what ``backend.save`` writes, loaded for inference only), and ``league/state_<N>.json`` is the league as it
stood when the checkpoint of step N was written (members, ratings, the opponent sampler's RNG), so
``--resume`` from any checkpoint restores the league exactly. Ratings are Elo: the learner and every
snapshot start where the learner stood when the snapshot was taken (1000 at first); ``random`` is the
anchor, fixed at 1000.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from agents.config.selfplay import FIXED_OPPONENTS, SelfPlaySection
from agents.run.checkpoint import atomic_write_bytes
from envs.errors import UserError
from envs.selfplay import GAME_KEY, GameResult, LookaheadOpponent, Opponent, RandomOpponent

START = 1000.0
"""Every rating's start, and the anchor ``random``'s rating."""
ANCHOR = "random"
STATE_RE = re.compile(r"^state_(\d+)\.json$")
MAX_STATE_BYTES = 32 * 2**20
"""The largest league state file read (bytes); 100,000 members take about 12 MB."""
MAX_MEMBERS = 100_000
"""The most members a league state file may hold (a snapshot every 1,000 steps for 10^8 steps)."""
MAX_STEP = 2**62
"""The largest step or game count a state file may hold."""
MEMBER_KEYS = {"name", "rating", "games", "score", "step"}
TAG = "@"
"""Joins a member's name and a game's drawn temperature (``step_000025000@0.1``) when ``selfplay.temperature``
is a list: the opponent's name in that game's result and in a saved game in progress."""


@runtime_checkable
class Tempering(Protocol):
    """An opponent that can play at another temperature (a checkpoint's policy, agents/run/selfplay/)."""

    def tempered(self, name: str, temperature: float) -> Opponent:
        """This opponent at ``temperature``, named ``name``."""
        ...


@dataclass
class Member:
    """One opponent of the league."""

    name: str
    """``step_<N>`` for a snapshot, else the fixed opponent's name."""
    rating: float = START
    games: int = 0
    score: float = 0.0
    """The learner's total score against it (1 a win, 0.5 a draw)."""
    step: int | None = None
    """The learner's step at the snapshot; None for a fixed opponent."""

    @property
    def learner_rate(self) -> float:
        """The learner's mean score against it (0.5 before any game)."""
        return self.score / self.games if self.games else 0.5


class League:
    """Snapshots, fixed opponents, the opponent draw and the ratings (see the module docstring).

    Args:
        folder: ``league/`` in the run dir.
        cfg: the ``selfplay:`` section.
        seed: seeds the opponent sampler (a resumed league continues its own RNG).
        load: builds a snapshot's opponent from its checkpoint file (the run layer's inference loader).
    """

    def __init__(self, folder: Path, cfg: SelfPlaySection, seed: int,
                 load: Callable[[Path, str], Opponent]) -> None:
        self.folder, self.cfg, self._load = folder, cfg, load
        self.rng = np.random.default_rng(seed)
        self.rating = START
        self.members: dict[str, Member] = {_fixed_name(f): Member(_fixed_name(f)) for f in cfg.fixed}
        self._opponents: dict[str, Opponent] = {}
        self._lock = threading.Lock()

    # -- the draw -------------------------------------------------------------------------------------------
    def draw(self) -> Opponent:
        """The opponent of a new game (thread-safe: envs stepped in threads draw here). With a list of
        temperatures, a member that plays from a checkpoint also gets one of them, drawn uniformly by the
        same generator (so a resumed league draws the same), and its name tagged with it (:data:`TAG`)."""
        with self._lock:
            name, temperatures = self._pick(), self.cfg.temperatures
            if len(temperatures) > 1 and self.source_file(name) is not None:
                name = f"{name}{TAG}{temperatures[int(self.rng.integers(len(temperatures)))]!r}"
            return self._opponent(name)

    def opponent_named(self, name: str) -> Opponent:
        """The opponent called ``name`` (a game restored mid-way names its opponent), without a draw; a name
        the league does not hold (its state was lost) gets a drawn opponent."""
        with self._lock:
            known = self.member_name(name) in self.members or name == ANCHOR
            return self._opponent(name if known else self._pick())

    def member_name(self, name: str) -> str:
        """The member an opponent's name stands for: ``name`` less a drawn temperature's tag."""
        member, tag, value = name.rpartition(TAG)
        if not tag or member not in self.members:
            return name
        try:
            return member if float(value) in self.cfg.temperatures else name
        except ValueError:
            return name

    def _pick(self) -> str:
        snaps = self.snapshots()
        fixed = [m.name for m in self.members.values() if m.step is None]
        if fixed and (not snaps or self.rng.random() < self.cfg.fixed_share):
            return str(fixed[int(self.rng.integers(len(fixed)))])
        if not snaps:
            return ANCHOR
        if len(snaps) == 1 or self.rng.random() < self.cfg.latest:
            return snaps[-1].name
        older = snaps[:-1]
        if self.cfg.sampler == "uniform":
            weights = np.ones(len(older))
        else:  # prioritized: the snapshots the learner still loses to
            weights = np.array([(1.0 - m.learner_rate) ** 2 for m in older]) + 1e-3
        return older[int(self.rng.choice(len(older), p=weights / weights.sum()))].name

    def _opponent(self, name: str) -> Opponent:
        member_name = self.member_name(name)
        if member_name != name and name not in self._opponents:  # a tagged draw: the member, tempered
            base = self._opponent(member_name)
            temperature = float(name.rpartition(TAG)[2])
            self._opponents[name] = base.tempered(name, temperature) if isinstance(base, Tempering) else base
        if name not in self._opponents:
            member = self.members.get(name)
            if member is not None and member.step is not None:
                self._opponents[name] = self._load(self.folder / f"{name}.safetensors", name)
            else:
                self._opponents[name] = fixed_opponent(self._fixed_source(name), self._load)
        return self._opponents[name]

    def _fixed_source(self, name: str) -> str:
        return next((f for f in self.cfg.fixed if _fixed_name(f) == name), name)

    def source_file(self, name: str) -> Path | None:
        """The checkpoint file the member ``name`` plays from (a snapshot's in :attr:`folder`, a fixed
        opponent's path); None for a scripted opponent."""
        member = self.members.get(name)
        if member is not None and member.step is not None:
            return self.folder / f"{name}.safetensors"
        source = self._fixed_source(name)
        return None if source in FIXED_OPPONENTS else Path(source)

    def adopt(self, members: list[Member], opponents: dict[str, Opponent]) -> None:
        """Take another league's members and ratings, with opponents already built for those that play from
        a file: a replica of the driver's league in a remote env runner (agents/rllib/league_remote.py), whose
        draw is this class's own and whose RNG stays its own."""
        with self._lock:
            self.members = {m.name: m for m in members}
            self._opponents.update(opponents)

    # -- results and snapshots ---------------------------------------------------------------------------
    def record(self, result: GameResult) -> None:
        """One finished game: the learner's and the opponent's Elo ratings move (the anchor's never)."""
        with self._lock:
            name = self.member_name(result.opponent)
            member = self.members.setdefault(name, Member(name))
            expected = 1.0 / (1.0 + 10 ** ((member.rating - self.rating) / 400.0))
            delta = self.cfg.elo_k * (result.score - expected)
            self.rating += delta
            if member.name != ANCHOR:
                member.rating -= delta
            member.games += 1
            member.score += result.score

    def observe(self, infos: Any) -> None:
        """The results of the games that ended in one vector step (``info[GAME_KEY]`` of each env's info)."""
        for info in infos if isinstance(infos, list | tuple) else ():
            result = info.get(GAME_KEY) if isinstance(info, dict) else None
            if isinstance(result, GameResult):
                self.record(result)

    def snapshots(self) -> list[Member]:
        """The learner's snapshots, oldest first."""
        return sorted((m for m in self.members.values() if m.step is not None), key=lambda m: m.step or 0)

    def due(self, step: int) -> bool:
        """Whether a snapshot is due at ``step`` (one every ``snapshot_every`` steps)."""
        snaps = self.snapshots()
        return step - ((snaps[-1].step or 0) if snaps else 0) >= self.cfg.snapshot_every

    def add_snapshot(self, step: int, save: Callable[[Path], Any]) -> Member:
        """Write the learner's snapshot at ``step`` through ``save`` (the backend's checkpoint writer) and
        add it, rated as the learner is now."""
        name = f"step_{step:09d}"
        self.folder.mkdir(parents=True, exist_ok=True)
        save(self.folder / f"{name}.safetensors")
        with self._lock:
            self.members[name] = Member(name, rating=self.rating, step=step)
            for key in [k for k in self._opponents if k == name or k.startswith(name + TAG)]:
                self._opponents.pop(key)
        return self.members[name]

    def scalars(self) -> dict[str, float]:
        """TensorBoard scalars: the learner's rating, each snapshot's, the league's size and the learner's
        score against each fixed opponent."""
        out = {"league/rating": self.rating, "league/snapshots": float(len(self.snapshots()))}
        for m in self.members.values():
            if m.step is not None:
                out[f"league/rating/{m.name}"] = m.rating
            elif m.games:
                out[f"league/score_vs/{m.name}"] = m.learner_rate
        return out

    # -- state ---------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The league as JSON: members, ratings and the sampler's RNG."""
        with self._lock:
            return {"rating": self.rating, "members": [asdict(m) for m in self.members.values()],
                    "rng": self.rng.bit_generator.state}

    def save_state(self, step: int) -> Path:
        """Write the state as ``state_<step>.json`` (atomically): the league of the checkpoint at ``step``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"state_{step:09d}.json"
        atomic_write_bytes(path, json.dumps(self.state(), indent=1).encode())
        return path

    def prune(self, oldest: int) -> list[Path]:
        """Delete the states saved before step ``oldest`` (the oldest checkpoint the run keeps): no kept
        checkpoint restores them, as the checkpoints' own rotation deletes theirs. The files deleted."""
        files = self.folder.glob("state_*.json") if self.folder.is_dir() else []
        doomed = [p for p in files if (m := STATE_RE.match(p.name)) and int(m.group(1)) < oldest]
        for path in doomed:
            path.unlink(missing_ok=True)
        return doomed

    def restore(self, step: int) -> int | None:
        """Take the state saved with the checkpoint of ``step`` (the newest at or before it); the step of the
        state taken, or None if there is none.

        Raises:
            UserError: the state file is not the league's JSON, or a member in it is not one this run can
                play (:func:`parse_state`).
        """
        files = self.folder.glob("state_*.json") if self.folder.is_dir() else []
        saved = sorted((int(m.group(1)), p) for p in files
                       if (m := STATE_RE.match(p.name)) and int(m.group(1)) <= step)
        if not saved:
            return None
        found, path = saved[-1]
        rating, members, rng = parse_state(path, {_fixed_name(f) for f in self.cfg.fixed})
        try:
            self.rng.bit_generator.state = rng
        except (ValueError, TypeError, OverflowError) as e:
            raise _bad_state(path, f"its rng is no PCG64 state ({type(e).__name__}: {e})") from e
        with self._lock:
            self.rating, self.members = rating, {m.name: m for m in members}
            self._opponents.clear()
        return found


def _fixed_name(source: str) -> str:
    """A fixed opponent's name in the league: ``random``/``lookahead``, or a checkpoint file's stem."""
    return source if source in FIXED_OPPONENTS else Path(source).stem


def fixed_opponent(source: str, load: Callable[[Path, str], Opponent],
                   where: str = "selfplay.fixed") -> Opponent:
    """A fixed opponent: ``random``, ``lookahead``, or a checkpoint file of another run (``where``: the
    setting that named it, for the message)."""
    if source == "random":
        return RandomOpponent()
    if source == "lookahead":
        return LookaheadOpponent()
    path = Path(source)
    if not path.is_file() or path.suffix != ".safetensors":  # a league's step_<N>.json is no checkpoint
        why = ("a directory" if path.is_dir() else "no such file" if not path.exists()
               else "not a .safetensors file")
        raise UserError(f"{where}: expected random, lookahead or a checkpoint file, got {source!r} "
                        f"({why}); give the path of a model.safetensors or step_<N>.safetensors")
    return load(path, _fixed_name(source))


def _bad_state(path: Path, what: str) -> UserError:
    return UserError(f"{path}: expected the league's state (JSON with rating, members and rng), but {what}; "
                     "restore the file from the run or start a new run")


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_STEP


def _member(m: Any, k: int, folder: Path, fixed: set[str]) -> Member:
    """Member ``k`` of a state file, checked: types and numbers, and a name this run plays from inside its run
    dir (a snapshot ``step_<N>`` with its file in ``folder``, or one of the fixed opponents)."""
    if not isinstance(m, dict) or set(m) - MEMBER_KEYS or "name" not in m:
        raise _StateError(f"member {k} is {_short(m)}, not an object with keys "
                          f"{', '.join(sorted(MEMBER_KEYS))}")
    member = Member(**m)
    name, step = member.name, member.step
    if not isinstance(name, str) or not (step is None or _count(step)) or not _count(member.games) or not (
            _finite(member.rating) and _finite(member.score) and 0 <= member.score <= member.games):
        raise _StateError(f"member {k} ({_short(m)}) has a wrong type or an impossible number (expected a "
                          "name, a finite rating, 0 <= score <= games, a step of null or 0 or more)")
    if step is not None:
        file = folder / f"{name}.safetensors"
        if name != f"step_{step:09d}":
            raise _StateError(f"snapshot {_short(name)} of step {step} is not named step_{step:09d}")
        if not file.is_file() or not file.resolve().is_relative_to(folder.resolve().parent):
            raise _StateError(f"snapshot {name} has no checkpoint file {file.name} in the run dir's "
                              "league/")
    elif name not in fixed and name not in FIXED_OPPONENTS:
        raise _StateError(f"member {_short(name)} is neither a snapshot step_<N> nor one of selfplay.fixed "
                          f"({', '.join(sorted(fixed | set(FIXED_OPPONENTS)))})")
    return member


class _StateError(Exception):
    """What :func:`parse_state` found wrong (a phrase for :func:`_bad_state`)."""


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_state(path: Path, fixed: set[str]) -> tuple[float, list[Member], dict[str, Any]]:
    """A league state file (``state_<N>.json``), checked before any of it is used: the learner's rating, the
    members, the sampler's RNG state. A regular file of at most :data:`MAX_STATE_BYTES`, at most
    :data:`MAX_MEMBERS` members, each as :func:`_member` checks it (``fixed``: the names of this run's
    ``selfplay.fixed``).

    Raises:
        UserError: one line naming the file, what is wrong in it and the fix.
    """
    try:
        if not path.is_file():
            raise _StateError("it is no regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
        if len(raw) > MAX_STATE_BYTES:
            raise _StateError(f"it is larger than {MAX_STATE_BYTES // 2**20} MiB")
        data = json.loads(raw)
        if not isinstance(data, dict) or not {"rating", "members", "rng"} <= set(data):
            raise _StateError(f"its top level is {_short(data)}")
        if not _finite(data["rating"]):
            raise _StateError(f"the learner's rating is {_short(data['rating'])}, not a finite number")
        members = data["members"]
        if not isinstance(members, list) or not len(members) <= MAX_MEMBERS:
            size = f"{len(members):,} members" if isinstance(members, list) else _short(members)
            raise _StateError(f"members is {size}, expected a list of at most {MAX_MEMBERS:,}")
        parsed = [_member(m, k, path.parent, fixed) for k, m in enumerate(members)]
        if len({m.name for m in parsed}) != len(parsed):
            raise _StateError("two members have the same name")
        if not isinstance(data["rng"], dict):
            raise _StateError(f"its rng is {_short(data['rng'])}, not an object")
    except (OSError, ValueError, OverflowError, RecursionError) as e:
        raise _bad_state(path, f"it gives {type(e).__name__}: {e}") from e
    except _StateError as e:
        raise _bad_state(path, str(e)) from e
    return float(data["rating"]), parsed, data["rng"]
