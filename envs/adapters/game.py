"""Atari games through the Arcade Learning Environment (ale-py ships the ROMs), with standard
preprocessing."""

from __future__ import annotations

import difflib
import re
from typing import Any

import gymnasium as gym
import numpy as np


def rom_id(name: str) -> str:
    """``Breakout`` / ``MontezumaRevenge`` / ``space_invaders`` → ALE's ROM id (``space_invaders``)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name.strip()).lower().replace("-", "_").replace("__", "_")


def game_names() -> list[str]:
    """Every game ALE ships, as CamelCase names (``Pong``, ``SpaceInvaders``)."""
    from ale_py import roms

    return sorted("".join(p.capitalize() for p in rom.split("_")) for rom in roms.get_all_rom_ids())


SCREEN_ROWS, SCREEN_COLUMNS = 210, 160
"""The ALE screen's size (every game)."""


class GameEnv(gym.Env):
    """An ALE game with the standard Atari preprocessing (Mnih et al. 2015; Machado et al. 2018).

    No-op reset (up to 30), frame skip 4 with max-pooling of the last two frames, grayscale frames of
    ``frame_size``×``frame_size`` (84 as in the Nature DQN; 42 as in the universe-starter-agent and RLlib's
    ``dim: 42``, a quarter of the pixels), a stack of 4 frames (observation ``uint8[4, S, S]``), optional
    sticky actions. ``clip_rewards`` and
    ``episodic_life`` are training aids and are switched off for evaluation (``env.eval_kwargs`` in
    configs/game.yaml), so reported returns are the raw game score. ``render()`` returns the full-colour
    210×160 frame.

    Args:
        game: ALE game name, e.g. ``Pong``, ``Breakout``, ``SpaceInvaders``.
        sticky_actions: repeat the previous action with probability 0.25 (Machado et al. 2018).
        clip_rewards: replace each reward by its sign.
        episodic_life: end the episode (``terminated``) on a life loss.
        noop_max: at most this many no-op actions at reset.
        frame_skip: frames per action.
        frame_stack: frames in one observation.
        frame_size: side of the square grayscale frame (pixels), at least 8.
        crop: ``[top, bottom]``: keep only these rows of the 210-row screen before resizing (the play field:
            Pong's is ``[34, 194]``, as the universe-starter-agent crops it), so the ball and paddles keep
            more of their pixels in a small frame; ``None`` resizes the whole screen.
        render_mode: ``"rgb_array"`` for full-colour frames.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, *, game: str = "Pong", sticky_actions: bool = False, clip_rewards: bool = False,
                 episodic_life: bool = False, noop_max: int = 30, frame_skip: int = 4, frame_stack: int = 4,
                 frame_size: int = 84, crop: list[int] | tuple[int, int] | None = None,
                 render_mode: str | None = None) -> None:
        try:
            import ale_py
        except ImportError as e:  # pragma: no cover - ale-py is a core dependency
            raise gym.error.DependencyNotInstalled("ale-py is not installed: pip install 'nondiff'") from e
        from ale_py import roms

        rom = rom_id(game)
        if rom not in roms.get_all_rom_ids():
            names = game_names()
            close = difflib.get_close_matches(game, names, n=3, cutoff=0.5)
            hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
            raise ValueError(f"game: unknown ALE game {game!r}; {hint}set env.game to one of the "
                             f"{len(names)} games ALE ships (python -c 'import envs.adapters.game as g; "
                             "print(g.game_names())')")
        if frame_skip < 1 or frame_stack < 1 or noop_max < 0:
            raise ValueError("game: frame_skip and frame_stack must be >= 1 and noop_max >= 0")
        if not isinstance(frame_size, int) or isinstance(frame_size, bool) or frame_size < 8:
            raise ValueError("game: frame_size must be an integer >= 8 (84 Nature DQN, 42 the small CNN), "
                             f"got {frame_size!r}; set env.frame_size")
        if crop is not None and not (isinstance(crop, (list, tuple)) and len(crop) == 2
                                     and all(isinstance(r, int) and not isinstance(r, bool) for r in crop)
                                     and 0 <= crop[0] < crop[1] <= SCREEN_ROWS and crop[1] - crop[0] >= 8):
            raise ValueError(f"game: crop must be two row numbers [top, bottom] with 0 <= top < bottom <= "
                             f"{SCREEN_ROWS} and at least 8 rows between them (Pong's play field: "
                             f"[34, 194]), got {crop!r}; set env.crop, or leave it out to resize the whole "
                             "screen")
        gym.register_envs(ale_py)
        ale_id = "ALE/" + "".join(p.capitalize() for p in rom.split("_")) + "-v5"
        env = gym.make(ale_id, frameskip=1, repeat_action_probability=0.25 if sticky_actions else 0.0,
                       full_action_space=False, render_mode=render_mode, max_num_frames_per_episode=108_000)
        screen = frame_size if crop is None else (SCREEN_COLUMNS, SCREEN_ROWS)  # cropped: resized below
        env = gym.wrappers.AtariPreprocessing(env, noop_max=noop_max, frame_skip=frame_skip,
                                              screen_size=screen, terminal_on_life_loss=episodic_life,
                                              grayscale_obs=True)
        if crop is not None:  # keep rows top:bottom, then Gymnasium's area resize (as AtariPreprocessing's)
            top, bottom = crop
            env = gym.wrappers.TransformObservation(env, lambda o: o[top:bottom],
                                                    gym.spaces.Box(0, 255, (bottom - top, SCREEN_COLUMNS),
                                                                   np.uint8))
            env = gym.wrappers.ResizeObservation(env, (frame_size, frame_size))
        if clip_rewards:
            env = gym.wrappers.TransformReward(env, lambda r: float(np.sign(float(r))))
        self._env: gym.Env = gym.wrappers.FrameStackObservation(env, stack_size=frame_stack)
        self.observation_space = self._env.observation_space
        self.action_space = self._env.action_space
        self.game, self.render_mode = game, render_mode
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": 60 // frame_skip}
        self._closed = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the game (with up to ``noop_max`` random no-ops)."""
        super().reset(seed=seed)
        return self._env.reset(seed=seed, options=options)

    def step(self, action):
        """One agent step: ``frame_skip`` emulator frames."""
        obs, reward, terminated, truncated, info = self._env.step(action)
        return obs, float(reward), terminated, truncated, info

    def render(self):
        """The full-colour 210×160 frame."""
        return self._env.render()

    def close(self) -> None:
        """Close the emulator; safe to call twice."""
        if not self._closed:
            self._closed = True
            self._env.close()
