"""Godot throughput: nondiff's binary protocol 1.1 against a JSON lock-step driver built the way Godot RL
Agents builds it, on the same engine, scene and agents, side by side (issue 27).

The anchor: Python listens, starts Godot with ``--port``, one TCP socket per game, one JSON message for all
agents every ``action_repeat`` ticks (``StreamPeer.put_string``/``get_string``: a little-endian u32 length and
the text), agents that finish reset themselves in Godot. Its sync node (:data:`ANCHOR_GD`) replaces the
nondiff one in a temporary copy of the shipped project. The nondiff side is the raw
:class:`~envs.vector.bridge.BridgeVectorEnv` (batched binary steps, same-step resets of finished agents).
Random actions, start-up excluded, the two sides alternating ``--repeats`` times, load recorded. Beside the
wall-clock rates, each side's CPU time per step (Godot's process and the driver's, from /proc and
``time.process_time``): on a loaded machine a lock-step round trip mostly waits to be scheduled, and the CPU
figures say what each side costs regardless::

    python benchmarks/experiments/godot_anchor.py [--agents 1 16 64] [--seconds 3] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ANCHOR_GD = """extends Node
# The anchor's sync: JSON messages for all agents, the way Godot RL Agents' sync.gd speaks.
export var action_repeat := 1
var peer
var agents := []
var frames_left := 0
var stepping := false

func _physics_process(_delta):
	if peer == null:
		for arg in OS.get_cmdline_args():
			if arg.begins_with("--port="):
				peer = StreamPeerTCP.new()
				peer.connect_to_host("127.0.0.1", int(arg.split("=")[1]))
			if arg.begins_with("--action-repeat="):
				action_repeat = int(arg.split("=")[1])
		while peer.get_status() == StreamPeerTCP.STATUS_CONNECTING:
			OS.delay_msec(1)
		peer.set_no_delay(true)  # no Nagle delay: a fair anchor
		agents = get_tree().get_nodes_in_group("nondiff_agent")
	if frames_left > 0:
		frames_left -= 1
		return
	if stepping:
		var obs := []
		var reward := []
		var done := []
		for a in agents:
			var status = a.nondiff_status()
			reward.append(a.nondiff_reward())
			done.append(status["terminated"] or status["truncated"])
			obs.append(a.nondiff_observation())
		peer.put_string(to_json({"type": "step", "obs": obs, "reward": reward, "done": done}))
		for i in range(agents.size()):
			if done[i]:
				agents[i].nondiff_reset(null)
	while true:
		var text: String = peer.get_string()
		if peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
			get_tree().quit()
			return
		var msg = JSON.parse(text).result
		if msg["type"] == "reset":
			var obs := []
			for a in agents:
				a.nondiff_reset(null)
				obs.append(a.nondiff_observation())
			peer.put_string(to_json({"type": "reset", "obs": obs}))
		elif msg["type"] == "action":
			for i in range(agents.size()):
				agents[i].nondiff_act(msg["action"][i])
			frames_left = action_repeat - 1
			stepping = true
			return
		else:
			get_tree().quit()
			return
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Rate(NamedTuple):
    """One side's run: agent-steps/s, and CPU µs per step of Godot and of the driver."""

    agent_steps_per_s: float
    godot_cpu_us: float
    driver_cpu_us: float


def _send(conn: socket.socket, msg: dict) -> None:
    data = json.dumps(msg).encode()
    conn.sendall(len(data).to_bytes(4, "little") + data)


def _recv(conn: socket.socket) -> dict:
    def exact(n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("Godot closed the connection")
            buf += chunk
        return bytes(buf)
    return json.loads(exact(int.from_bytes(exact(4), "little")))


def anchor(project: Path, k: int, repeat: int, seconds: float) -> Rate:
    """The JSON lock-step driver's run."""
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    proc = subprocess.Popen(["godot3-server", "--path", str(project), "--fixed-fps", "60", f"--agents={k}",
                             f"--port={port}", f"--action-repeat={repeat}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv.settimeout(10)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rng = np.random.default_rng(0)
    _send(conn, {"type": "reset"})
    np.array(_recv(conn)["obs"], dtype=np.float32)
    n, began, cpu, mine = 0, time.monotonic(), cpu_seconds(proc.pid), time.process_time()
    while time.monotonic() - began < seconds:
        _send(conn, {"type": "action", "action": rng.integers(0, 5, k).tolist()})
        msg = _recv(conn)
        np.array(msg["obs"], dtype=np.float32), np.array(msg["reward"]), np.array(msg["done"])
        n += 1
    rate = Rate(k * n / (time.monotonic() - began), (cpu_seconds(proc.pid) - cpu) / n * 1e6,
                (time.process_time() - mine) / n * 1e6)
    _send(conn, {"type": "close"})
    conn.close()
    srv.close()
    proc.wait(10)
    return rate


def binary(k: int, repeat: int, seconds: float) -> Rate:
    """The run of nondiff's batched binary steps (the raw bridge vector env)."""
    from envs.vector.bridge_start import make_bridge_vector_env

    cmd = f"godot3-server --path {{assets}}/godot --fixed-fps 60 --agents={k} --action-repeat={repeat}"
    venv = make_bridge_vector_env({"command": cmd, "listen": "127.0.0.1:0"}, k, None)
    assert venv is not None
    raw = venv.unwrapped
    raw.reset(seed=0)
    rng = np.random.default_rng(0)
    pid = raw.programs[0].program_pid
    assert pid is not None
    n, began, cpu, mine = 0, time.monotonic(), cpu_seconds(pid), time.process_time()
    while time.monotonic() - began < seconds:
        raw.step(rng.integers(0, 5, k))
        n += 1
    rate = Rate(k * n / (time.monotonic() - began), (cpu_seconds(pid) - cpu) / n * 1e6,
                (time.process_time() - mine) / n * 1e6)
    venv.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--action-repeat", type=int, default=1)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "anchor"
        shutil.copytree(ROOT / "envs" / "adapters" / "assets" / "godot", project)
        (project / "anchor_sync.gd").write_text(ANCHOR_GD)
        scene = project / "game" / "main.tscn"
        scene.write_text(scene.read_text().replace("res://addons/nondiff/sync.gd", "res://anchor_sync.gd")
                         .replace('env_name = "godot-reach"\n', ""))
        for k in a.agents:
            for _ in range(a.repeats):
                js = anchor(project, k, a.action_repeat, a.seconds)
                load_json = os.getloadavg()[0]
                nd = binary(k, a.action_repeat, a.seconds)
                cpu_js, cpu_nd = js.godot_cpu_us + js.driver_cpu_us, nd.godot_cpu_us + nd.driver_cpu_us
                print(json.dumps({"agents": k, "action_repeat": a.action_repeat,
                                  "anchor_json": round(js.agent_steps_per_s),
                                  "nondiff_binary": round(nd.agent_steps_per_s),
                                  "ratio": round(nd.agent_steps_per_s / js.agent_steps_per_s, 2),
                                  "cpu_us_per_step": {
                                      "anchor": {"godot": round(js.godot_cpu_us, 1),
                                                 "driver": round(js.driver_cpu_us, 1)},
                                      "nondiff": {"godot": round(nd.godot_cpu_us, 1),
                                                  "driver": round(nd.driver_cpu_us, 1)}},
                                  "cpu_ratio": round(cpu_js / cpu_nd, 2),
                                  "load": [round(load_json, 2), round(os.getloadavg()[0], 2)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
