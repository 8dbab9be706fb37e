"""Godot adapter: a Godot 3 game with the nondiff addon, started headless by nondiff and connected back.

The game is any Godot 3 project holding the addon ``addons/nondiff`` (a sync node and its wire code,
envs/adapters/assets/godot/addons/nondiff): every node of the group ``nondiff_agent`` is one env instance,
so one Godot process hosts K of them (protocol 1.1). Godot has no binary-safe stdin/stdout, so nondiff
listens on loopback (``listen``, port 0) and starts ``command``, which connects back with the
``NONDIFF_CONNECT`` and ``NONDIFF_TOKEN`` of its environment (envs/bridge/launch.py). Godot must run its
physics with ``--fixed-fps`` so that a step is game time, not wall-clock time.

The default command runs the shipped game, Reach (envs/adapters/assets/godot/game): 16 balls per scene
(RigidBody2D, non-colliding with each other) steer around pillars to their goals; observations are the way
to the goal, the velocity and eight raycasts. A random policy succeeds in under 1% of episodes.

Everything else is :class:`~envs.bridge.process.ProcessEnv`: the watchdog, restarts within the run's budget
(a Godot killed, hung in a GDScript loop, or sending garbage), and ``num_instances`` batching in the trainer.
A missing ``godot3-server`` stops the run in one line naming the install command (exit code 2).
"""

from __future__ import annotations

from typing import Annotated

from envs.bridge.process import ProcessEnv
from envs.reach import Reach, beyond_loopback

GODOT = "godot3-server"
"""The headless Godot 3 build (Debian/Ubuntu: ``apt-get install godot3-server``)."""
COMMAND = f"{GODOT} --path {{assets}}/godot --fixed-fps 60 --agents=16"
"""The shipped game with 16 agents per Godot; ``{assets}`` is nondiff's assets folder."""
LISTEN = "127.0.0.1:0"
Listen = Annotated[str, Reach.CONTACT.mark("listen for programs on", beyond_loopback)]


class GodotEnv(ProcessEnv):
    """A Godot game with the nondiff addon (instance 0 of its K agents; training batches all K).

    Args:
        command: how to start Godot; it connects back to nondiff. Add ``--agents=N`` for the shipped game's
            K, ``--action-repeat=N`` for the physics ticks per step (default 4).
        listen: the loopback address nondiff listens on for the Godots it starts (port 0: a free port each).
        num_instances: the K every Godot must declare; None: whatever the scene has.
        connect_timeout: seconds to wait for programs (see :class:`~envs.bridge.process.ProcessEnv`).
        handshake_timeout: each connection's deadline for its handshake.
        step_timeout: seconds a step may take before Godot counts as hung.
        reset_timeout: seconds a reset, and a start (launch to handshake), may take.
        max_restarts: the run's restart budget.
        restart_rate: at most this many restarts within ``restart_period`` seconds.
        restart_period: the rate-limit window in seconds.
        term_grace: seconds between SIGTERM and SIGKILL when stopping Godot.
        render_mode: only None (the server build has no rasteriser).
    """

    def __init__(self, *, command: Annotated[str, Reach.RUN.mark("start the program")] = COMMAND,
                 listen: Listen = LISTEN,
                 num_instances: int | None = None, connect_timeout: float = 60.0,
                 handshake_timeout: float = 5.0, step_timeout: float = 5.0, reset_timeout: float = 10.0,
                 max_restarts: int = 10, restart_rate: int = 10, restart_period: float = 60.0,
                 term_grace: float = 1.0, render_mode: str | None = None) -> None:
        if render_mode is not None:
            raise ValueError(f"godot: render_mode must be None (the headless {GODOT} draws nothing), got "
                             f"{render_mode!r}")
        super().__init__(command=command, listen=listen, num_instances=num_instances,
                         connect_timeout=connect_timeout, handshake_timeout=handshake_timeout,
                         step_timeout=step_timeout, reset_timeout=reset_timeout, max_restarts=max_restarts,
                         restart_rate=restart_rate, restart_period=restart_period, term_grace=term_grace)
