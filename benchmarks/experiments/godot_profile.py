"""Where a Godot lock-step step spends its time (issue 27): inside Godot, and against a minimal client.

Inside: the shipped Reach scene with its sync node replaced by a timing node (:data:`BENCH_GD`) that runs the
work of one step each physics frame without a socket: decode K actions (JSON as the anchor, int64 as
nondiff's wire.gd), apply them, the agents' status and reward, their observations, nondiff's binary encoding
and the anchor's JSON encoding; the rest of a frame ("between") is the engine: physics, raycasts, main loop.
Mode ``physics`` times the frames alone. Client: the real sync node answering a minimal Python
client (one pre-encoded step frame, a blocking ``recv``, the reply not parsed): the Godot side of a round
trip plus the wake-ups, with nondiff's trainer-side Python taken out. Load recorded::

    python benchmarks/experiments/godot_profile.py [--agents 1 16 64] [--frames 3000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

BENCH_GD = """extends Node
# Times the pieces of one lock-step frame inside Godot, without a socket.
const Wire = preload("res://addons/nondiff/wire.gd")
var agents := []
var n := 0
var frames := 2000
var mode := "all"
var t := {}
var last := 0
var began := 0
var rng := RandomNumberGenerator.new()

func _ready():
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--frames="):
			frames = int(arg.split("=")[1])
		if arg.begins_with("--mode="):
			mode = arg.split("=")[1]
	for k in ["act", "status", "obs", "enc_bin", "enc_json", "dec_json", "dec_bin", "between"]:
		t[k] = 0

func _add(k, since):
	var now = OS.get_ticks_usec()
	t[k] += now - since
	return now

func _physics_process(_d):
	var s = OS.get_ticks_usec()
	if agents.empty():
		agents = get_tree().get_nodes_in_group("nondiff_agent")
		began = s
		last = s
		return
	if n > 0:
		t["between"] += s - last
	n += 1
	if n > frames:
		var out = {"frames": frames, "agents": agents.size(), "mode": mode,
			"wall_us_per_frame": float(s - began) / (frames + 1)}
		for k in t:
			out[k + "_us"] = float(t[k]) / frames
		print("BENCH ", to_json(out))
		get_tree().quit()
		return
	if mode == "physics":
		if n == 1:
			for a in agents:
				a.nondiff_act(1)
		last = OS.get_ticks_usec()
		return
	# decode the actions: JSON (anchor) and binary (nondiff wire.recv's loop)
	var acts := []
	for i in range(agents.size()):
		acts.append(rng.randi_range(0, 4))
	var jtext = to_json({"type": "action", "action": acts})
	var buf := StreamPeerBuffer.new()
	for a in acts:
		buf.put_64(a)
	var raw = buf.data_array
	s = OS.get_ticks_usec()
	var parsed = JSON.parse(jtext).result
	s = _add("dec_json", s)
	var data := StreamPeerBuffer.new()
	data.data_array = raw
	var values := []
	for _i in range(agents.size()):
		values.append(data.get_64())
	s = _add("dec_bin", s)
	for i in range(agents.size()):
		agents[i].nondiff_act(values[i])
	s = _add("act", s)
	var rewards := []
	var terminated := []
	var truncated := []
	var infos := []
	for a in agents:
		var status: Dictionary = a.nondiff_status()
		rewards.append(a.nondiff_reward())
		terminated.append(status.get("terminated", false))
		truncated.append(status.get("truncated", false))
		infos.append(status.get("info", {}))
	s = _add("status", s)
	var obs := []
	for a in agents:
		obs.append(a.nondiff_observation())
	s = _add("obs", s)
	var flat := PoolRealArray()
	for o in obs:
		flat.append_array(PoolRealArray(o))
	var arrays := [Wire.floats(flat), Wire.floats(rewards), Wire.bools(terminated), Wire.bools(truncated)]
	var out := PoolByteArray()
	for a in arrays:
		out.append_array(a)
	s = _add("enc_bin", s)
	var done := []
	for i in range(agents.size()):
		done.append(terminated[i] or truncated[i])
	var text = to_json({"type": "step", "obs": obs, "reward": rewards, "done": done})
	var bytes = text.to_utf8()
	s = _add("enc_json", s)
	for i in range(agents.size()):
		if terminated[i] or truncated[i]:
			agents[i].nondiff_reset(null)
	last = OS.get_ticks_usec()
"""


def inside(k: int, mode: str, frames: int) -> dict[str, float]:
    """Microseconds per frame of each piece, measured by Godot itself."""
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "bench"
        shutil.copytree(ROOT / "envs" / "adapters" / "assets" / "godot", project)
        (project / "bench.gd").write_text(BENCH_GD)
        scene = project / "game" / "main.tscn"
        scene.write_text(scene.read_text().replace("res://addons/nondiff/sync.gd", "res://bench.gd")
                         .replace('env_name = "godot-reach"\n', ""))
        out = subprocess.run(["godot3-server", "--path", str(project), "--fixed-fps", "60", f"--agents={k}",
                              f"--mode={mode}", f"--frames={frames}"], capture_output=True, text=True,
                             timeout=300).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    return {key: round(v, 1) if isinstance(v, float) else v for key, v in json.loads(line[6:]).items()}


def client(k: int, seconds: float) -> float:
    """Round trips/s of the real sync node against a minimal client (pre-encoded frame, blocking recv)."""
    from envs.bridge import codec
    from envs.vector.bridge_start import make_bridge_vector_env

    cmd = f"godot3-server --path {{assets}}/godot --fixed-fps 60 --agents={k} --action-repeat=1"
    venv = make_bridge_vector_env({"command": cmd, "listen": "127.0.0.1:0"}, k, None)
    assert venv is not None
    raw = venv.unwrapped
    raw.reset(seed=0)
    chan = raw.programs[0]._chan
    sock = chan.sock
    sock.setblocking(True)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", 0, 0))  # no timeout
    frames = [codec.encode({"type": "step", "actions": np.full(k, a, dtype=np.int64)}) for a in range(5)]
    n, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        sock.sendall(frames[n % 5])
        buf = sock.recv(1 << 20)
        while len(buf) < 4 or len(buf) < 4 + struct.unpack(">I", buf[:4])[0]:
            buf += sock.recv(1 << 20)
        n += 1
    rate = n / (time.perf_counter() - began)
    sock.setblocking(False)
    venv.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--frames", type=int, default=3000)
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args(argv)
    for k in a.agents:
        for mode in ("all", "physics"):
            print(json.dumps({"inside": inside(k, mode, a.frames), "load": os.getloadavg()[0]}), flush=True)
        rate = client(k, a.seconds)
        print(json.dumps({"client": {"agents": k, "round_trips_per_s": round(rate),
                                     "agent_steps_per_s": round(k * rate), "us": round(1e6 / rate)},
                          "load": os.getloadavg()[0]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
