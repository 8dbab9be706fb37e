"""The addon's README ("Add nondiff to your Godot 3 game"), followed literally: a new Godot project, the addon
copied in, a sync node, agents in the group with the six methods, a config pointing at the project, then
train.py and evaluate.py with a real Godot."""

from __future__ import annotations

import shutil

from envs.bridge.launch import ASSETS

README = ASSETS / "godot" / "addons" / "nondiff" / "README.md"

AGENT = """extends Node2D
# A walker on a line: push left or right, reach x = 1.
var x := 0.0
var t := 0

func _ready():
	add_to_group("nondiff_agent")

func nondiff_spaces():
	return {"observation_space": {"type": "Box", "low": -5, "high": 5, "shape": [1], "dtype": "float32"},
		"action_space": {"type": "Discrete", "n": 2}}

func nondiff_reset(episode_seed):
	x = 0.0
	t = 0

func nondiff_act(action):
	t += 1
	x += 0.1 if action == 1 else -0.1

func nondiff_status():
	return {"terminated": x >= 1.0, "truncated": t >= 50, "info": {"is_success": x >= 1.0}}

func nondiff_reward():
	return 1.0 if x >= 1.0 else -0.01

func nondiff_observation():
	return [x]
"""

SCENE = """[gd_scene load_steps=3 format=2]

[ext_resource path="res://addons/nondiff/sync.gd" type="Script" id=1]
[ext_resource path="res://walker.gd" type="Script" id=2]

[node name="Main" type="Node2D"]

[node name="Sync" type="Node" parent="."]
script = ExtResource( 1 )
action_repeat = 2
""" + "".join(f"""
[node name="Walker{i}" type="Node2D" parent="."]
script = ExtResource( 2 )
""" for i in range(4))


def test_the_readme_steps_train_a_new_game(cli, tmp_path):
    text = README.read_text()
    for step in ("Copy `addons/nondiff/`", "res://addons/nondiff/sync.gd", 'add_to_group("nondiff_agent")',
                 "nondiff_spaces()", "nondiff_reset(episode_seed)", "nondiff_act(action)", "nondiff_status()",
                 "nondiff_reward()", "nondiff_observation()", "--fixed-fps 60", "listen: 127.0.0.1:0",
                 "python train.py --env godot --config your.yaml", "python evaluate.py runs/<run>"):
        assert step in text, step
    project = tmp_path / "walker"
    project.mkdir()
    (project / "project.godot").write_text('config_version=4\n\n[application]\n\nrun/main_scene="res://main.tscn"\n')
    shutil.copytree(ASSETS / "godot" / "addons" / "nondiff", project / "addons" / "nondiff")  # step 2
    (project / "main.tscn").write_text(SCENE)  # steps 3 and 4
    (project / "walker.gd").write_text(AGENT)
    config = tmp_path / "your.yaml"  # step 5
    config.write_text(f"env:\n  id: godot\n  command: godot3-server --path {project} --fixed-fps 60\n"
                      "  listen: 127.0.0.1:0\n")
    run = tmp_path / "run"  # step 6
    cli("train.py", "--env", "godot", "--config", str(config), "--timesteps", "512", "--num-envs", "8",
        "--run-dir", str(run), "--set", "agent.n_steps=32", "--set", "eval.every=0", check=True)
    proc = cli("evaluate.py", str(run), "--episodes", "3", check=True)
    assert "trained" in proc.stdout and "random" in proc.stdout
