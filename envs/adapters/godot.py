"""Godot adapter: a Godot 3 game with the nondiff addon, started headless by nondiff and connected back.

The game is any Godot 3 project holding the addon ``addons/nondiff`` (a sync node and its wire code,
envs/adapters/assets/godot/addons/nondiff): every node of the group ``nondiff_agent`` is one env instance,
so one Godot process hosts K of them (protocol 1.1), and resets the finished ones within the step's reply
(1.2's autoreset). Godot has no binary-safe stdin/stdout, so nondiff listens on loopback (``listen``, port
0) and starts ``command``, which connects back with the ``NONDIFF_CONNECT`` and ``NONDIFF_TOKEN`` of its
environment (envs/bridge/launch.py). Godot must run its
physics with ``--fixed-fps`` so that a step is game time, not wall-clock time.

The default command runs the shipped game, Reach (envs/adapters/assets/godot/game): 16 balls per scene
(RigidBody2D, non-colliding with each other) steer around pillars to their goals; observations are the way
to the goal, the velocity and eight raycasts. A random policy succeeds in under 1% of episodes.

Everything else is :class:`~envs.bridge.process.ProcessEnv`: the watchdog, restarts within the run's budget
(a Godot killed, hung in a GDScript loop, or sending garbage), and ``num_instances`` batching in the trainer.
A missing ``godot3-server`` stops the run in one line naming the install command (exit code 2).

Pixels: ``--camera=N`` in the command gives every agent an N×N RGB camera, drawn by Godot's renderer into a
Viewport of its own (the addon's sync node; Reach draws the arena, the agent's goal and itself). The
observation becomes ``Dict(state=<the vector>, camera=uint8 [N, N, 3])``: a camera adds to what the agent
knows rather than replacing it, and SB3's ``MultiInputPolicy`` (``agent.policy: auto``) reads both. The
server build has no rasteriser, so the camera needs the regular build ``godot3`` under ``xvfb-run``
(:data:`CAMERA_COMMAND`); ``render_mode="rgb_array"`` (``evaluate.py --video``) returns instance 0's camera.
Either build missing is one line naming ``apt-get install godot3 xvfb`` (exit code 2).
"""

from __future__ import annotations

import os
import shlex
import shutil
from typing import Annotated

from envs.bridge.process import ProcessEnv
from envs.bridge.spawn import under_xvfb
from envs.reach import Reach, beyond_loopback

GODOT = "godot3-server"
"""The headless Godot 3 build (Debian/Ubuntu: ``apt-get install godot3-server``)."""
COMMAND = f"{GODOT} --path {{assets}}/godot --fixed-fps 60 --agents=16"
"""The shipped game with 16 agents per Godot; ``{assets}`` is nondiff's assets folder."""
RENDERER = "godot3"
"""The regular Godot 3 build, which renders (under ``xvfb-run`` on a machine without a display)."""
PIXELS_INSTALL = "apt-get install godot3 xvfb"
"""The one command that installs what the camera needs."""
CAMERA_COMMAND = (f"xvfb-run -a {RENDERER} --path {{assets}}/godot --fixed-fps 60 --disable-render-loop "
                  "--resolution 64x64 --audio-driver Dummy --agents=16 --camera=64")
"""The shipped game with a 64×64 camera per agent: drawn only when an observation needs it
(``--disable-render-loop``), in a 64×64 window (the window itself is never read)."""
LISTEN = "127.0.0.1:0"
Listen = Annotated[str, Reach.CONTACT.mark("listen for programs on", beyond_loopback)]


class GodotEnv(ProcessEnv):
    """A Godot game with the nondiff addon (instance 0 of its K agents; training batches all K).

    Args:
        command: how to start Godot; it connects back to nondiff. Add ``--agents=N`` for the shipped game's
            K (a step costs ~K² beyond a few dozen: 3 ms at 64, 130 ms at 512; more agents go in more
            Godots, ``--num-envs``), ``--action-repeat=N`` for the physics ticks per step (default 4).
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
        render_mode: None, or ``"rgb_array"`` for instance 0's camera (the command must give ``--camera=N``).
    """

    def __init__(self, *, command: Annotated[str, Reach.RUN.mark("start the program")] = COMMAND,
                 listen: Listen = LISTEN,
                 num_instances: int | None = None, connect_timeout: float = 60.0,
                 handshake_timeout: float = 5.0, step_timeout: float = 5.0, reset_timeout: float = 10.0,
                 max_restarts: int = 10, restart_rate: int = 10, restart_period: float = 60.0,
                 term_grace: float = 1.0, render_mode: str | None = None) -> None:
        check_pixels(command, render_mode)
        super().__init__(command=command, listen=listen, num_instances=num_instances,
                         connect_timeout=connect_timeout, handshake_timeout=handshake_timeout,
                         step_timeout=step_timeout, reset_timeout=reset_timeout, max_restarts=max_restarts,
                         restart_rate=restart_rate, restart_period=restart_period, term_grace=term_grace,
                         render_mode=render_mode)


def camera_size(argv: list[str]) -> int:
    """The N of ``--camera=N`` in a Godot command (0: no camera)."""
    sizes = [a.split("=", 1)[1] for a in argv if a.startswith("--camera=")]
    if not sizes:
        return 0
    if not sizes[-1].isdigit() or not 0 < int(sizes[-1]) <= 1024:
        raise ValueError(f"godot: --camera=N takes the camera's size in pixels, 1 to 1024; got {sizes[-1]!r}")
    return int(sizes[-1])


def check_pixels(command: str, render_mode: str | None) -> None:
    """Refuse, in one line, a camera or ``rgb_array`` rendering that cannot work on this machine.

    Raises:
        ValueError: ``render_mode`` without ``--camera=N``; the camera with the server build, without a
            display or ``xvfb-run``; ``godot3`` or ``xvfb-run`` not installed.
    """
    if render_mode not in (None, "rgb_array"):
        raise ValueError(f"godot: render_mode must be None or 'rgb_array', got {render_mode!r}")
    argv = shlex.split(command)
    camera = camera_size(argv)
    if not camera and render_mode is None:
        return
    if not camera:
        raise ValueError(f"godot: render_mode='rgb_array' (evaluate.py --video) shows instance 0's camera, "
                         "and this command has none; add --camera=N to env.command when training, e.g. "
                         f"env.command={CAMERA_COMMAND!r} ({PIXELS_INSTALL}); evaluate a run trained without "
                         "one without --video")
    godot = under_xvfb(argv)
    xvfb = godot is not argv
    if not godot or os.path.basename(godot[0]) == GODOT:
        raise ValueError(f"godot: --camera needs Godot's rendering build, {RENDERER} under xvfb-run ({GODOT} "
                         f"draws nothing): env.command={CAMERA_COMMAND!r} ({PIXELS_INSTALL})")
    if not xvfb and not os.environ.get("DISPLAY"):
        raise ValueError(f"godot: --camera needs a display; without one run Godot under xvfb-run: "
                         f"env.command={CAMERA_COMMAND!r} ({PIXELS_INSTALL})")
    missing = [p for p in (argv[0], godot[0]) if "/" not in p and shutil.which(p) is None]
    missing = list(dict.fromkeys(missing))
    if missing:
        raise ValueError(f"godot: the camera needs {' and '.join(missing)}, not installed here; install "
                         f"with: {PIXELS_INSTALL}")
