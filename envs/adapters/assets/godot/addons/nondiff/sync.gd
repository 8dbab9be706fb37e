# nondiff sync node (protocol 1.1, docs/protocol.md): add it to a scene; every node in `agent_group` is one
# env instance (K = their number). The trainer starts Godot with NONDIFF_CONNECT=HOST:PORT and
# NONDIFF_TOKEN in its environment (env.command with env.listen); this node connects there, proves the token
# (HMAC handshake), declares K, and then serves batched reset/step requests in lock-step with the physics:
# run Godot with --fixed-fps so that a step advances `action_repeat` physics ticks of game time, not of
# wall-clock time. When the trainer says `close` or goes away, Godot quits.
#
# An agent node implements (duck typing):
#   nondiff_spaces() -> {"observation_space": {...}, "action_space": {...}}   (JSON spaces; Box obs)
#   nondiff_reset(seed)           seed: int, or null (go on with the agent's own randomness)
#   nondiff_act(action)           int (Discrete) or Array of floats (Box), applied for action_repeat ticks
#   nondiff_observation() -> Array of floats (the Box's values, flat)
#   nondiff_reward() -> float     reward since the previous step
#   nondiff_status() -> {"terminated": bool, "truncated": bool, "info": {...}}   e.g. info.is_success;
#                                 an empty info costs nothing on the wire (Reach sends one when an episode ends)
# Godot 4: see wire.gd for the API differences; `export var` becomes `@export var`, `yield` `await`.
extends Node

signal stepped(count)  # after each step request is applied (tests hook faults here)

export var agent_group := "nondiff_agent"
export var action_repeat := 4  # physics ticks per step; --action-repeat=N on the command line overrides
export var env_name := "godot"

const Wire = preload("res://addons/nondiff/wire.gd")

var wire
var agents := []
var stepping := []  # instances of the step in flight
var heads := {}  # step reply headers in JSON, by "n width"
var frames_left := 0
var steps := 0
var started := false
var done := false


func _ready() -> void:
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--action-repeat="):
			action_repeat = max(1, int(arg.split("=")[1]))


func _physics_process(_delta: float) -> void:
	if done:
		return
	if not started:  # the first tick: the scene's agents exist now
		started = true
		if not _connect() or not _handshake():
			return
		_serve()
		return
	if frames_left > 0:
		frames_left -= 1
		return
	_reply_step()
	_serve()


func _quit(why: String, code: int) -> void:
	if not done:
		done = true
		if why != "":
			printerr("nondiff sync: ", why)
		if wire != null:
			wire.peer.disconnect_from_host()
		OS.exit_code = code
		get_tree().quit()


func _connect() -> bool:
	var where := OS.get_environment("NONDIFF_CONNECT")
	var parts := where.rsplit(":", true, 1)
	if parts.size() != 2 or not parts[1].is_valid_integer():
		_quit("NONDIFF_CONNECT must be HOST:PORT (nondiff sets it when it starts Godot), got '%s'" % where, 2)
		return false
	agents = get_tree().get_nodes_in_group(agent_group)
	if agents.empty():
		_quit("no node in group '%s': add the agents to it" % agent_group, 2)
		return false
	var peer := StreamPeerTCP.new()
	peer.connect_to_host(parts[0], int(parts[1]))
	var until := OS.get_ticks_msec() + 10000
	while peer.get_status() == StreamPeerTCP.STATUS_CONNECTING and OS.get_ticks_msec() < until:
		OS.delay_msec(1)
	if peer.get_status() != StreamPeerTCP.STATUS_CONNECTED:
		_quit("cannot connect to %s" % where, 1)
		return false
	wire = Wire.new(peer)
	return true


func _handshake() -> bool:
	var token := OS.get_environment("NONDIFF_TOKEN")
	var hello: Dictionary = wire.recv()
	if wire.failed != "" or hello["header"].get("type") != "hello":  # trainer gone: a clean end
		_quit("expected hello: " + wire.failed, 0 if wire.failed != "" else 1)
		return false
	var h: Dictionary = hello["header"]
	var version := str(h.get("version", "1.0")).split(".")
	if version[0] != "1" or int(version[1]) < 1:
		wire.send({"type": "error", "message": "protocol version mismatch: this Godot client needs "
			+ "protocol 1.1 (num_instances); nondiff speaks %s" % h.get("version")})
		_quit("the trainer speaks protocol %s" % h.get("version"), 2)
		return false
	var crypto := Crypto.new()
	var nonce: String = crypto.generate_random_bytes(16).hex_encode()
	wire.send({"type": "challenge", "version": "1.1", "nonce": nonce,
		"mac": Wire.mac(token, "server:", str(h.get("nonce", "")))})
	var auth: Dictionary = wire.recv()
	if wire.failed != "" or auth["header"].get("type") != "auth":
		_quit("expected auth: " + wire.failed, 0 if wire.failed != "" else 1)
		return false
	if not Wire.same(str(auth["header"].get("mac", "")), Wire.mac(token, "client:", nonce)):
		wire.send({"type": "error", "message": "authentication failed: wrong token"})
		_quit("authentication failed: wrong token", 2)
		return false
	var spaces: Dictionary = agents[0].nondiff_spaces()
	wire.send({"type": "spec", "env": env_name, "version": "1.1", "metadata": {},
		"observation_space": spaces["observation_space"], "action_space": spaces["action_space"],
		"num_instances": agents.size()})
	return wire.failed == ""


func _instances(header: Dictionary) -> Array:
	var out := []
	if header.has("instances"):
		for i in header["instances"]:
			out.append(int(i))
		for i in out:
			if i < 0 or i >= agents.size():
				return []
	else:
		for i in range(agents.size()):
			out.append(i)
	return out


func _observations(which: Array) -> Array:
	var flat := PoolRealArray()
	var width := 0
	for i in which:
		var obs := PoolRealArray(agents[i].nondiff_observation())
		width = obs.size()
		flat.append_array(obs)
	return ["<f4", [which.size(), width], Wire.floats(flat)]


func _serve() -> void:
	# Answer requests until a step arrives (it runs for action_repeat ticks) or the session ends.
	while not done:
		var msg: Dictionary = wire.recv()
		if wire.failed != "":
			_quit(wire.failed, 0)
			return
		var header: Dictionary = msg["header"]
		var kind = header.get("type")
		if kind == "step":
			var which := _instances(header)
			var actions: Array = msg["arrays"][int(header["actions"]["$array"])] if msg["arrays"].size() else []
			if which.empty() or actions.size() % which.size() != 0:
				wire.send({"type": "error", "message": "a step for %d instances with %d action values"
					% [which.size(), actions.size()]})
				continue
			var width: int = actions.size() / which.size()
			for n in range(which.size()):
				agents[which[n]].nondiff_act(actions[n] if width == 1 else actions.slice(n * width,
					(n + 1) * width - 1))
			stepping = which
			frames_left = action_repeat - 1
			steps += 1
			emit_signal("stepped", steps)
			return
		elif kind == "reset":
			var which := _instances(header)
			var seeds: Array = header.get("seeds", [])
			for n in range(which.size()):
				agents[which[n]].nondiff_reset(seeds[n] if n < seeds.size() else null)
			var infos := []
			for _i in which:
				infos.append({})
			wire.send({"type": "reset_result", "obs": {"$array": 0}, "infos": infos}, [_observations(which)])
		elif kind == "close":
			wire.send({"type": "bye"})
			_quit("", 0)
		else:
			wire.send({"type": "error", "message": "this Godot client does not serve '%s' requests" % kind})


func _reply_step() -> void:
	var rewards := []
	var terminated := []
	var truncated := []
	var infos := []
	for i in stepping:
		var status: Dictionary = agents[i].nondiff_status()
		rewards.append(agents[i].nondiff_reward())
		terminated.append(status.get("terminated", false))
		truncated.append(status.get("truncated", false))
		infos.append(status.get("info", {}))
	var n := stepping.size()
	var arrays := [_observations(stepping), ["<f4", [n], Wire.floats(rewards)],
		["|b1", [n], Wire.bools(terminated)], ["|b1", [n], Wire.bools(truncated)]]
	var key := "%d %d" % [n, arrays[0][1][1]]
	if not heads.has(key):  # the header of a step reply depends on n and the observation's width only
		var specs := []
		for a in arrays:
			specs.append({"dtype": a[0], "shape": a[1]})
		heads[key] = to_json({"type": "step_result", "obs": {"$array": 0}, "rewards": {"$array": 1},
			"terminated": {"$array": 2}, "truncated": {"$array": 3}, "arrays": specs})
	var head: String = heads[key]
	for info in infos:  # infos only when one has something to say (absent: all empty)
		if not info.empty():
			head = head.substr(0, head.length() - 1) + ',"infos":' + to_json(infos) + "}"
			break
	wire.send_text(head, arrays)
