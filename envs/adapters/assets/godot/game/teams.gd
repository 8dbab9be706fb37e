# Two teams in Reach's arena, one scene of protocol 1.3 (docs/protocol.md, "Agents"): seekers (Reach's
# agents: discrete pushes, ray casts; group "seeker", ids seeker_0 …) and chasers (a continuous push, four
# observations; group "chaser", ids chaser_0 …), each team its own policy. Chasers are truncated after
# CHASER_STEPS steps, seekers after Reach's MAX_STEPS or when they reach their goals, so the agents finish at
# their own steps. `--seekers=N` and `--chasers=M` on the command line (default 2 each). Run it with
#   godot3-server --path envs/adapters/assets/godot --fixed-fps 60 res://game/teams.tscn
extends Node2D

const Teammate = preload("res://game/teammate.gd")
const Chaser = preload("res://game/chaser.gd")
const Arena = preload("res://game/arena.gd")
const ARENA := Vector2(800, 600)
const PILLARS := [Vector2(400, 150), Vector2(400, 300), Vector2(400, 450)]
const PILLAR_RADIUS := 30.0
const CHASER_STEPS := 60
const MAX_AGENTS := 4096  # per team: the protocol's largest num_instances (envs/bridge/protocol.py)


func _ready() -> void:
	var counts := {"seeker": 2, "chaser": 2}
	for arg in OS.get_cmdline_args():
		for team in counts:
			if arg.begins_with("--%ss=" % team):
				var given: String = arg.split("=", true, 1)[1]
				counts[team] = int(given) if given.is_valid_integer() else -1
				if counts[team] < 0 or counts[team] > MAX_AGENTS:
					_refuse("--%ss=N takes 0 to %d agents, got '%s'" % [team, MAX_AGENTS, given])
					return
	if counts["seeker"] + counts["chaser"] < 1:
		_refuse("--seekers=0 with --chasers=0 leaves no agent: give one of them 1 or more")
		return
	Arena.build(self, ARENA, PILLARS, PILLAR_RADIUS)
	var seed0 := int(OS.get_environment("NONDIFF_SEED")) if OS.get_environment("NONDIFF_SEED") != "" else 0
	var n := 0
	for team in ["seeker", "chaser"]:
		for i in range(counts[team]):
			var agent = Teammate.new() if team == "seeker" else Chaser.new()
			agent.agent_id = "%s_%d" % [team, i]
			agent.group = team
			if team == "chaser":
				agent.max_steps = CHASER_STEPS
			n += 1
			agent.rng.seed = seed0 * 4099 + n
			agent.nondiff_reset(null)  # placed before it enters the tree: see main.gd
			add_child(agent)
			agent.add_to_group("nondiff_agent")


func _refuse(why: String) -> void:  # a count the scene cannot serve: quit at once (exit 2), saying which
	printerr("nondiff teams: %s; fix env.command" % why)
	$Sync.set_physics_process(false)
	OS.exit_code = 2
	get_tree().quit()
