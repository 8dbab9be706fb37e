"""Reach task for any MuJoCo MJCF arm: bring a fingertip site to a random target."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_MODEL = ASSETS / "arm2.xml"

# Headless rendering through EGL: a GPU driver's where there is one, Mesa's software EGL otherwise (no OSMesa
# fallback is attempted). A MUJOCO_GL the user set wins.
os.environ.setdefault("MUJOCO_GL", "egl")


class RobotEnv(gym.Env):
    """Reach task for a MuJoCo arm.

    The observation is ``[cos q, sin q, q̇, target − fingertip, target − base, |target − fingertip|,
    |target − base|]`` for hinge joints
    (slide joints contribute ``q`` instead of cos/sin). The action is one value in ``[-1, 1]`` per
    actuator, scaled to the actuator's ``ctrlrange``; the bundled arms use position servos, as
    industrial arms do. The reward is ``−distance − ctrl_cost_weight · Σ(force / force_limit)²``.

    Success (``info["is_success"]``) means the fingertip is within ``success_tolerance`` of the
    target when the episode ends. The default tolerance is 10% of the arm's reach (2.1 cm for the
    default 0.21 m arm). With ``hold_steps > 0`` the episode terminates once the fingertip has stayed
    inside the tolerance for that many consecutive steps.

    Targets are drawn by sampling a random joint configuration within the joint limits and taking
    its fingertip position, so every target is reachable for any arm.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 25}

    def __init__(
        self,
        *,
        model: str | os.PathLike[str] | None = None,
        ee_site: str = "fingertip",
        target_body: str = "target",
        target_range: tuple[float, float] | list[float] | None = None,
        frame_skip: int = 2,
        ctrl_cost_weight: float = 0.05,
        success_tolerance: float | None = None,
        hold_steps: int = 0,
        action_mode: str = "absolute",
        max_delta: float = 0.1,
        init_noise: float = 0.1,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 320,
    ) -> None:
        try:
            import mujoco
        except ImportError as e:  # pragma: no cover - mujoco is a core dependency
            raise gym.error.DependencyNotInstalled("mujoco is not installed: pip install 'nondiff'") from e
        self._mj = mujoco
        path = Path(model) if model is not None else DEFAULT_MODEL
        if not path.is_absolute() and not path.exists() and (ASSETS / path).exists():
            path = ASSETS / path
        if not path.exists():
            raise ValueError(f"robot: model file {str(path)!r} does not exist; pass model=PATH to an MJCF "
                             "file")
        if frame_skip < 1:
            raise ValueError(f"robot: frame_skip must be >= 1, got {frame_skip}")
        if hold_steps < 0:
            raise ValueError(f"robot: hold_steps must be >= 0, got {hold_steps}")
        if action_mode not in ("absolute", "delta"):
            raise ValueError(f"robot: action_mode must be 'absolute' or 'delta', got {action_mode!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"robot: render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.model = mujoco.MjModel.from_xml_path(str(path))
        self.data = mujoco.MjData(self.model)
        self._site = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_SITE, ee_site)
        if self._site < 0:
            raise ValueError(f"robot: the model has no site named {ee_site!r}; pass ee_site=NAME")
        body = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, target_body)
        self._mocap = int(self.model.body_mocapid[body]) if body >= 0 else -1
        if self.model.nu == 0:
            raise ValueError(f"robot: the model {path.name} has no actuators")
        self.frame_skip = frame_skip
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.hold_steps = int(hold_steps)
        self.init_noise = float(init_noise)
        self.action_mode, self.max_delta = action_mode, float(max_delta)
        self.render_mode = render_mode
        self._width, self._height = width, height
        self._renderer: Any = None

        self._hinge = self.model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE
        self._qadr = self.model.jnt_qposadr.copy()
        self._vadr = self.model.jnt_dofadr.copy()
        self._base = self.data.xpos[1].copy() if self.model.nbody > 1 else np.zeros(3)
        lo, hi = self.model.actuator_ctrlrange.T
        limited = self.model.actuator_ctrllimited.astype(bool)
        self._ctrl_lo = np.where(limited, lo, -1.0)
        self._ctrl_hi = np.where(limited, hi, 1.0)
        frc = np.abs(self.model.actuator_forcerange).max(axis=1)
        self._force_scale = np.where(self.model.actuator_forcelimited.astype(bool) & (frc > 0), frc, 1.0)

        self._rng_fk = np.random.default_rng(0)
        self.reach = float(np.max(np.linalg.norm(self._sample_tips(2000) - self._base, axis=1)))
        self.target_range = tuple(target_range) if target_range is not None else (0.0, self.reach)
        if len(self.target_range) != 2 or not 0 <= self.target_range[0] < self.target_range[1]:
            raise ValueError(f"robot: target_range must be (min_radius, max_radius) with 0 <= min < max, "
                             f"got {target_range}")
        self.success_tolerance = (float(success_tolerance) if success_tolerance is not None
                                  else 0.1 * self.reach)
        if self.success_tolerance <= 0:
            raise ValueError(f"robot: success_tolerance must be > 0, got {success_tolerance}")

        nq = int(np.sum(np.where(self._hinge, 2, 1)))
        obs_dim = nq + self.model.njnt + 8 + (self.model.nu if action_mode == "delta" else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.model.nu,), dtype=np.float32)
        self._target = np.zeros(3)
        self._inside = 0

    # -- kinematics helpers -------------------------------------------------------------------
    def _random_qpos(self, rng: np.random.Generator) -> np.ndarray:
        qpos = self.model.qpos0.copy()
        for j in range(self.model.njnt):
            lo, hi = self.model.jnt_range[j] if self.model.jnt_limited[j] else (-np.pi, np.pi)
            qpos[self._qadr[j]] = rng.uniform(lo, hi)
        return qpos

    def _sample_tips(self, n: int) -> np.ndarray:
        data = self._mj.MjData(self.model)
        tips = np.empty((n, 3))
        for i in range(n):
            data.qpos[:] = self._random_qpos(self._rng_fk)
            self._mj.mj_kinematics(self.model, data)
            tips[i] = data.site_xpos[self._site]
        return tips

    def _fingertip(self) -> np.ndarray:
        return self.data.site_xpos[self._site].copy()

    def _obs(self) -> np.ndarray:
        q = self.data.qpos[self._qadr]
        qpos = np.concatenate([np.cos(q[self._hinge]), np.sin(q[self._hinge]), q[~self._hinge]])
        qvel = self.data.qvel[self._vadr]
        tip = self._fingertip()
        to_tip, to_base = self._target - tip, self._target - self._base
        parts = [qpos, qvel, to_tip, to_base, [np.linalg.norm(to_tip), np.linalg.norm(to_base)]]
        if self.action_mode == "delta":
            parts.append(self._ctrl_to_unit(self.data.ctrl))
        return np.concatenate(parts).astype(np.float32)

    def _ctrl_to_unit(self, ctrl: np.ndarray) -> np.ndarray:
        return 2.0 * (ctrl - self._ctrl_lo) / (self._ctrl_hi - self._ctrl_lo) - 1.0

    # -- gymnasium API ------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Draw a reachable target and a start pose near the zero configuration."""
        super().reset(seed=seed)
        mj = self._mj
        lo, hi = self.target_range
        for _ in range(1000):
            self.data.qpos[:] = self._random_qpos(self.np_random)
            mj.mj_kinematics(self.model, self.data)
            target = self.data.site_xpos[self._site].copy()
            if lo <= np.linalg.norm(target - self._base) <= hi:
                break
        else:
            raise RuntimeError(f"robot: no reachable target within target_range={self.target_range}")
        self._target = target
        mj.mj_resetData(self.model, self.data)
        noise = self.np_random.uniform(-self.init_noise, self.init_noise, size=self.model.nq)
        self.data.qpos[:] = self.model.qpos0 + noise
        self.data.qvel[:] = 0.0
        self.data.ctrl[:] = np.clip(self.data.qpos[self.model.actuator_trnid[:, 0]], self._ctrl_lo,
                                    self._ctrl_hi)
        if self._mocap >= 0:
            self.data.mocap_pos[self._mocap] = target
        mj.mj_forward(self.model, self.data)
        self._inside = 0
        return self._obs(), {"distance": float(np.linalg.norm(target - self._fingertip())),
                             "is_success": False}

    def step(self, action):
        """Apply one action for ``frame_skip`` physics steps and score the new distance."""
        a = np.clip(np.asarray(action, dtype=np.float64).reshape(self.model.nu), -1.0, 1.0)
        if self.action_mode == "delta":
            unit = np.clip(self._ctrl_to_unit(self.data.ctrl) + a * self.max_delta, -1.0, 1.0)
        else:
            unit = a
        self.data.ctrl[:] = self._ctrl_lo + (unit + 1.0) * 0.5 * (self._ctrl_hi - self._ctrl_lo)
        effort = 0.0
        for _ in range(self.frame_skip):
            self._mj.mj_step(self.model, self.data)
            effort += float(np.sum(np.square(self.data.actuator_force / self._force_scale)))
        self._mj.mj_kinematics(self.model, self.data)  # positions after the last integration, not before it
        dist = float(np.linalg.norm(self._target - self._fingertip()))
        ctrl_cost = self.ctrl_cost_weight * effort / self.frame_skip
        success = dist < self.success_tolerance
        self._inside = self._inside + 1 if success else 0
        terminated = self.hold_steps > 0 and self._inside >= self.hold_steps
        info = {"distance": dist, "ctrl_cost": ctrl_cost, "is_success": success}
        return self._obs(), -dist - ctrl_cost, terminated, False, info

    def render(self):
        """Return an RGB frame of the arm and the target (headless)."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = self._mj.Renderer(self.model, self._height, self._width)
        cam = self._mj.mj_name2id(self.model, self._mj.mjtObj.mjOBJ_CAMERA, "top")
        self._renderer.update_scene(self.data, camera=cam if cam >= 0 else -1)
        return self._renderer.render().copy()

    def get_state(self) -> dict[str, Any]:
        """Snapshot of the whole integration state, the target and the RNG, for exact resume."""
        spec = self._mj.mjtState.mjSTATE_INTEGRATION
        buf = np.empty(self._mj.mj_stateSize(self.model, spec))
        self._mj.mj_getState(self.model, self.data, buf, spec)
        return {"physics": buf.tolist(), "target": self._target.tolist(), "inside": self._inside,
                "rng": self.np_random.bit_generator.state}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a snapshot taken by :meth:`get_state`."""
        spec = self._mj.mjtState.mjSTATE_INTEGRATION
        self._mj.mj_setState(self.model, self.data, np.asarray(state["physics"], dtype=np.float64), spec)
        self._target = np.asarray(state["target"], dtype=np.float64)
        self._inside = int(state["inside"])
        self.np_random.bit_generator.state = state["rng"]
        if self._mocap >= 0:
            self.data.mocap_pos[self._mocap] = self._target
        self._mj.mj_kinematics(self.model, self.data)

    def close(self) -> None:
        """Release the renderer; safe to call more than once."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
