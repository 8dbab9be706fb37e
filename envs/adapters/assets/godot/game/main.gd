# Reach: K balls (RigidBody2D) in one arena, each steering towards its own goal around pillars (StaticBody2D).
# Agents collide with the walls and pillars (layer 2) but not with each other (they sit on layer 1 and mask
# only layer 2), so K agents share one scene. `--agents=N` on the command line sets K (default 16).
extends Node2D

const Agent = preload("res://game/agent.gd")
const Arena = preload("res://game/arena.gd")
const ARENA := Vector2(800, 600)
const PILLARS := [Vector2(400, 150), Vector2(400, 300), Vector2(400, 450)]
const PILLAR_RADIUS := 30.0
const MAX_AGENTS := 4096  # the protocol's largest num_instances (envs/bridge/protocol.py MAX_INSTANCES)


func _ready() -> void:
	var count := 16
	var given := "16"
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--agents="):
			given = arg.split("=", true, 1)[1]
			count = int(given) if given.is_valid_integer() else 0
	if count < 1 or count > MAX_AGENTS:  # 0 made "no node in group"; 5000 took minutes, then a refused spec
		printerr("nondiff reach: --agents=N takes 1 to %d agents per Godot, got '%s'; fix env.command" % [
			MAX_AGENTS, given])
		$Sync.set_physics_process(false)
		OS.exit_code = 2
		get_tree().quit()
		return
	Arena.build(self, ARENA, PILLARS, PILLAR_RADIUS)
	var seed0 := int(OS.get_environment("NONDIFF_SEED")) if OS.get_environment("NONDIFF_SEED") != "" else 0
	for i in range(count):
		var agent = Agent.new()
		agent.rng.seed = seed0 * 4099 + i + 1  # a restarted program is never seeded by the trainer
		agent.nondiff_reset(null)  # placed before it enters the tree: added at the origin and moved after,
		add_child(agent)  # the start-up grew as K^2 (4,096 agents: 51 s before the first connect, now 11 s)
		agent.add_to_group("nondiff_agent")
	var fault := OS.get_environment("NONDIFF_GODOT_FAULT")  # tests: kind:step:marker, once per marker file
	if fault != "":
		$Sync.connect("stepped", self, "_fault", [fault.split(":", true, 2)])


func _fault(count: int, how: Array) -> void:
	var marker := File.new()
	if count != int(how[1]) or marker.file_exists(how[2]):
		return
	marker.open(how[2], File.WRITE)
	marker.close()
	match how[0]:
		"hang":
			while true:
				pass
		"garbage":
			$Sync.wire.peer.put_data("this is not a frame".to_utf8())
		"crash":
			OS.kill(OS.get_process_id())
