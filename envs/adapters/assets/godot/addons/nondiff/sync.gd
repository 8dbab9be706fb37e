# nondiff sync node (protocol 1.2, docs/protocol.md): add it to a scene; every node in `agent_group` is one
# env instance (K = their number). The trainer starts Godot with NONDIFF_CONNECT=HOST:PORT and
# NONDIFF_TOKEN in its environment (env.command with env.listen); this node connects there, proves the token
# (HMAC handshake), declares K, and then serves batched reset/step requests in lock-step with the physics:
# run Godot with --fixed-fps so that a step advances `action_repeat` physics ticks of game time, not of
# wall-clock time. A step that asks for `autoreset` (1.2: training does) resets the agents that finished
# within its reply, their last observations sent as `final_obs`. When the trainer says `close` or goes away,
# Godot quits.
#
# An agent node implements (duck typing):
#   nondiff_spaces() -> {"observation_space": {...}, "action_space": {...}}   (JSON spaces; Box obs)
#   nondiff_reset(seed)           seed: int, or null (go on with the agent's own randomness)
#   nondiff_act(action)           int (Discrete) or Array of floats (Box), applied for action_repeat ticks
#   nondiff_observation() -> Array of floats (the Box's values, flat)
#   nondiff_reward() -> float     reward since the previous step
#   nondiff_status() -> {"terminated": bool, "truncated": bool, "info": {...}}   e.g. info.is_success;
#                                 an empty info costs nothing on the wire (Reach sends one when an episode ends)
#   nondiff_camera(viewport)      only with --camera=N: fill (first call) and aim the agent's camera, an
#                                 N x N Viewport of its own, before each frame; the observation becomes
#                                 {"state": the Box, "camera": uint8 [N, N, 3]} (README.md, "Pixels")
#   nondiff_agent() -> {"id": String, "group": String}   optional: protocol 1.3 (scene.gd): the agents are
#                                 one scene of agents in policy groups, each group with its own spaces, that
#                                 finish at their own steps (game/teams.tscn); no camera
# Godot 4: see wire.gd for the API differences; `export var` becomes `@export var`, `yield` `await`.
extends Node

signal stepped(count)  # after each step request is applied (tests hook faults here)

export var agent_group := "nondiff_agent"
export var action_repeat := 4  # physics ticks per step; --action-repeat=N on the command line overrides
export var env_name := "godot"
export var camera := 0  # N > 0: an N x N RGB camera per agent (rendering build); --camera=N overrides

const Wire = preload("res://addons/nondiff/wire.gd")
const Scene = preload("res://addons/nondiff/scene.gd")

var wire
var agents := []
var stepping := []  # instances of the step in flight
var autoreset := false  # the step in flight asked for autoreset (protocol 1.2)
var heads := {}  # step reply headers in JSON, by "n width": [text, UTF-8 bytes]
var everyone := []  # 0 … K - 1: the instances of a request that names none
var frames_left := 0
var steps := 0
var started := false
var views := []  # one Viewport per agent (the camera), drawn on demand
var done := false
var scene = null  # protocol 1.3 (scene.gd), when the agents say who they are (nondiff_agent)


func _ready() -> void:
	for arg in OS.get_cmdline_args():
		if arg.begins_with("--action-repeat="):
			action_repeat = max(1, int(arg.split("=")[1]))
		elif arg.begins_with("--camera="):
			camera = max(0, int(arg.split("=")[1]))


func _physics_process(_delta: float) -> void:
	if done:
		return
	if not started:  # the first tick: the scene's agents exist now (cameras: their first drawing is deferred)
		started = true
		if camera > 0:
			_cameras()
			return
	if wire == null:
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
	if agents.empty():
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
	if agents[0].has_method("nondiff_agent") and (version[0] != "1" or int(version[1]) < 3 or camera > 0):
		wire.send({"type": "error", "message": "protocol version mismatch: this Godot scene declares agents, "
			+ "which needs protocol 1.3 (and no camera); nondiff speaks %s" % h.get("version")})
		_quit("the trainer speaks protocol %s, or a camera was asked for" % h.get("version"), 2)
		return false
	if version[0] != "1" or int(version[1]) < 1:
		wire.send({"type": "error", "message": "protocol version mismatch: this Godot client needs "
			+ "protocol 1.1 (num_instances); nondiff speaks %s" % h.get("version")})
		_quit("the trainer speaks protocol %s" % h.get("version"), 2)
		return false
	var crypto := Crypto.new()
	var nonce: String = crypto.generate_random_bytes(16).hex_encode()
	if agents[0].has_method("nondiff_agent"):
		scene = Scene.new(agents)
	wire.send({"type": "challenge", "version": "1.3" if scene != null else "1.2", "nonce": nonce,
		"mac": Wire.mac(token, "server:", str(h.get("nonce", "")))})
	var auth: Dictionary = wire.recv()
	if wire.failed != "" or auth["header"].get("type") != "auth":
		_quit("expected auth: " + wire.failed, 0 if wire.failed != "" else 1)
		return false
	if not Wire.same(str(auth["header"].get("mac", "")), Wire.mac(token, "client:", nonce)):
		wire.send({"type": "error", "message": "authentication failed: wrong token"})
		_quit("authentication failed: wrong token", 2)
		return false
	if scene != null:
		wire.send(scene.spec(env_name))
		return wire.failed == ""
	var spaces: Dictionary = agents[0].nondiff_spaces()
	var observation_space = spaces["observation_space"]
	if camera > 0:
		observation_space = {"type": "Dict", "spaces": {"state": observation_space, "camera": {"type": "Box",
			"low": 0, "high": 255, "shape": [camera, camera, 3], "dtype": "uint8"}}}
	wire.send({"type": "spec", "env": env_name, "version": "1.2", "metadata": {"render_fps": 15},
		"observation_space": observation_space, "action_space": spaces["action_space"],
		"num_instances": agents.size()})
	return wire.failed == ""


func _instances(header: Dictionary) -> Array:
	if not header.has("instances"):
		if everyone.size() != agents.size():
			everyone = range(agents.size())
		return everyone
	var out := []
	for i in header["instances"]:
		out.append(int(i))
	for i in out:
		if i < 0 or i >= agents.size():
			return []
	return out


func _observations(which: Array) -> Array:
	var flat := PoolRealArray()
	for i in which:
		flat.append_array(PoolRealArray(agents[i].nondiff_observation()))
	return ["<f4", [which.size(), flat.size() / max(1, which.size())], Wire.floats(flat)]


func _cameras() -> void:
	# One N x N Viewport per agent, drawn only on demand (run Godot with --disable-render-loop)
	if OS.get_name() == "Server":
		_quit("--camera needs Godot's rendering build under Xvfb: xvfb-run -a godot3 "
			+ "(apt-get install godot3 xvfb); godot3-server draws nothing", 2)
		return
	agents = get_tree().get_nodes_in_group(agent_group)
	for agent in agents:
		var view := Viewport.new()
		view.size = Vector2(camera, camera)
		view.usage = Viewport.USAGE_2D
		view.disable_3d = true
		view.transparent_bg = false
		view.render_target_v_flip = true  # rows top to bottom, as an image is read
		view.render_target_update_mode = Viewport.UPDATE_DISABLED
		add_child(view)
		views.append(view)
		agent.nondiff_camera(view)


func _frames(which: Array) -> Array:
	# The cameras of `which`, drawn now: uint8 [n, N, N, 3]
	for i in which:
		agents[i].nondiff_camera(views[i])
		views[i].render_target_update_mode = Viewport.UPDATE_ONCE
	VisualServer.force_draw(false)
	var out := PoolByteArray()
	for i in which:
		var image: Image = views[i].get_texture().get_data()
		image.convert(Image.FORMAT_RGB8)
		out.append_array(image.get_data())
	return ["|u1", [which.size(), camera, camera, 3], out]


func _obs_field(arrays: Array, which: Array):
	# The observations of `which` appended to arrays; their field: one array, or {"state", "camera"}
	arrays.append(_observations(which))
	var state := {"$array": arrays.size() - 1}
	if camera <= 0:
		return state
	arrays.append(_frames(which))
	return {"state": state, "camera": {"$array": arrays.size() - 1}}


func _render() -> void:
	# render: instance 0's camera, scaled up (nearest) to at least 256 pixels across
	if camera <= 0:
		wire.send({"type": "error", "message": "this Godot has no camera to render: start it with --camera=N"})
		return
	var frame: Array = _frames([0])
	var image := Image.new()
	image.create_from_data(camera, camera, false, Image.FORMAT_RGB8, frame[2])
	var scale := int(max(1, ceil(256.0 / camera)))
	image.resize(camera * scale, camera * scale, Image.INTERPOLATE_NEAREST)
	wire.send({"type": "render_result", "frame": {"$array": 0}},
		[["|u1", [camera * scale, camera * scale, 3], image.get_data()]])


func _serve() -> void:
	# Answer requests until a step arrives (it runs for action_repeat ticks) or the session ends.
	while not done:
		var msg: Dictionary = wire.recv()
		if wire.failed != "":
			_quit(wire.failed, 0)
			return
		var header: Dictionary = msg["header"]
		var kind = header.get("type")
		if scene != null and kind == "step":
			var error: String = scene.act(header, msg["arrays"])
			if error != "":
				wire.send({"type": "error", "message": error})
				continue
			frames_left = action_repeat - 1
			steps += 1
			emit_signal("stepped", steps)
			return
		elif scene != null and kind == "reset":
			scene.reset(header, wire)
		elif kind == "step":
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
			autoreset = header.get("autoreset", false) == true
			frames_left = action_repeat - 1
			steps += 1
			emit_signal("stepped", steps)
			return
		elif kind == "reset":
			var which := _instances(header)
			var seeds: Array = header.get("seeds", [])
			for n in range(which.size()):
				agents[which[n]].nondiff_reset(seeds[n] if n < seeds.size() else null)
			var arrays := []
			var obs = _obs_field(arrays, which)
			var key := "reset %d %d" % [which.size(), arrays[0][1][1]]
			if not heads.has(key):  # no infos (all empty), so the header depends on n and the width only
				var specs := []
				for a in arrays:
					specs.append({"dtype": a[0], "shape": a[1]})
				var text := to_json({"type": "reset_result", "obs": obs, "arrays": specs})
				heads[key] = [text, text.to_utf8()]
			wire.send_bytes(heads[key][1], arrays)
		elif kind == "render":
			_render()
		elif kind == "close":
			wire.send({"type": "bye"})
			_quit("", 0)
		else:
			wire.send({"type": "error", "message": "this Godot client does not serve '%s' requests" % kind})


func _reply_step() -> void:
	# Rewards and flags straight into pool arrays; infos as JSON only when one has something to say; with
	# autoreset, the finished agents' last observations, then their reset, then everyone's observations
	if scene != null:
		scene.reply(wire)
		return
	var rewards := PoolRealArray()
	var terminated := PoolByteArray()
	var truncated := PoolByteArray()
	var infos := PoolStringArray()
	var ended := []
	var said := false
	for i in stepping:
		var status: Dictionary = agents[i].nondiff_status()
		rewards.append(agents[i].nondiff_reward())
		var t: bool = status.get("terminated", false)
		var u: bool = status.get("truncated", false)
		terminated.append(1 if t else 0)
		truncated.append(1 if u else 0)
		if autoreset and (t or u):
			ended.append(i)
		var info: Dictionary = status.get("info", {})
		if info.empty():
			infos.append("{}")
		else:
			infos.append(to_json(info))
			said = true
	var n := stepping.size()
	var arrays := []
	var final = null
	if not ended.empty():
		final = _obs_field(arrays, ended)
		for i in ended:
			agents[i].nondiff_reset(null)
	var obs = _obs_field(arrays, stepping)
	var at := arrays.size()
	arrays += [["<f4", [n], Wire.floats(rewards)], ["|b1", [n], terminated], ["|b1", [n], truncated]]
	var state: int = at - 1 if camera <= 0 else at - 2  # the state observations' array
	var key := "%d %d %d" % [n, arrays[state][1][1], ended.size()]
	if not heads.has(key):  # a step reply's header depends on n, the observation's width and m only
		var specs := []
		for a in arrays:
			specs.append({"dtype": a[0], "shape": a[1]})
		var head := {"type": "step_result", "obs": obs, "rewards": {"$array": at},
			"terminated": {"$array": at + 1}, "truncated": {"$array": at + 2}, "arrays": specs}
		if final != null:
			head["final_obs"] = final
		var text := to_json(head)
		heads[key] = [text, text.to_utf8()]
	var head: Array = heads[key]
	if said:  # infos only when one has something to say (absent: all empty)
		var text: String = head[0]
		wire.send_text(text.substr(0, text.length() - 1) + ',"infos":[' + infos.join(",") + "]}", arrays)
	else:
		wire.send_bytes(head[1], arrays)
