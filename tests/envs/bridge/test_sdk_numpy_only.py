"""envs.bridge.sdk runs with NumPy alone: a program where Gymnasium cannot be imported trains over
the bridge."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from conftest import ROOT

from envs.bridge.process import ProcessEnv

PROGRAM = textwrap.dedent("""
    import sys
    sys.modules["gymnasium"] = None  # any import of gymnasium now raises ImportError
    import numpy as np
    from envs.bridge.sdk import serve
    assert "gymnasium" not in sys.modules or sys.modules["gymnasium"] is None

    class Counter:
        observation_space = {"type": "Box", "low": -10, "high": 10, "shape": [2], "dtype": "float32"}
        action_space = {"type": "Discrete", "n": 3}

        def reset(self, seed=None, options=None):
            self.x = 0
            return np.zeros(2, np.float32), {"gymnasium_importable": False}

        def step(self, action):
            self.x += int(action) - 1
            return np.array([self.x, 1.0], np.float32), float(self.x), abs(self.x) >= 3, False, {}

    serve(Counter)
""")


def test_a_program_without_gymnasium_serves_an_env(tmp_path):
    program = tmp_path / "numpy_only.py"
    program.write_text(PROGRAM)
    probe = subprocess.run([sys.executable, "-c",
                            "import sys; sys.modules['gymnasium'] = None; import gymnasium"],
                           capture_output=True, text=True)
    assert probe.returncode != 0 and "import of gymnasium halted" in probe.stderr  # the block is real
    env = ProcessEnv(command=f"{sys.executable} {program}", cwd=str(ROOT))
    assert env.observation_space.shape == (2,) and env.action_space.n == 3
    obs, info = env.reset(seed=0)
    assert info == {"gymnasium_importable": False}
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(2)
    env.close()
    np.testing.assert_array_equal(obs, [3.0, 1.0])
    assert reward == 3.0 and terminated and not truncated
