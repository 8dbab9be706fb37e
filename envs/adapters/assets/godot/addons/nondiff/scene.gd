# nondiff protocol 1.3 for the sync node (docs/protocol.md, "Agents"): the agents of one scene, each with an
# id and a policy group, each group with its own spaces; agents finish at their own steps. The sync node uses
# it when its agents implement nondiff_agent() -> {"id": String, "group": String}; every agent of a group
# must return the same nondiff_spaces() (a float32 Box observation). One scene per connection; no camera.
extends Reference

const Wire = preload("res://addons/nondiff/wire.gd")

var agents := []  # the agent nodes, in declaration order
var ids := []  # their ids
var group_of := []  # their groups
var groups := {}  # group -> {"observation_space": ..., "action_space": ...}
var index := {}  # id -> position in agents
var live := {}  # positions of the agents in the episode (not finished since the reset)
var stepping := []  # positions the step in flight acts for, in the request's order


func _init(nodes: Array) -> void:
	agents = nodes
	for i in range(nodes.size()):
		var who: Dictionary = nodes[i].nondiff_agent()
		ids.append(str(who["id"]))
		group_of.append(str(who["group"]))
		index[ids[i]] = i
		if not groups.has(group_of[i]):
			groups[group_of[i]] = nodes[i].nondiff_spaces()


func spec(env_name: String) -> Dictionary:
	var declared := []
	for i in range(ids.size()):
		declared.append({"id": ids[i], "group": group_of[i]})
	return {"type": "spec", "env": env_name, "version": "1.3", "metadata": {"render_fps": 15},
		"groups": groups, "agents": declared}


func _grouped(which: Array, arrays: Array) -> Dictionary:
	# The observations of `which`, one stacked float32 array per group (in the order of `which`), appended
	# to arrays; the obs field: group -> {"$array": i}
	var rows := {}
	var counts := {}
	var order := []
	for i in which:
		var g: String = group_of[i]
		if not rows.has(g):
			rows[g] = []
			counts[g] = 0
			order.append(g)
		rows[g] = rows[g] + agents[i].nondiff_observation()
		counts[g] += 1
	var out := {}
	for g in order:
		arrays.append(["<f4", [counts[g], rows[g].size() / counts[g]], Wire.floats(rows[g])])
		out[g] = {"$array": arrays.size() - 1}
	return out


func reset(header: Dictionary, wire) -> void:
	# Every agent starts an episode (agent i with the seed + i, or its own randomness)
	var episode_seed = header.get("seed")
	live.clear()
	for i in range(agents.size()):
		agents[i].nondiff_reset(null if episode_seed == null else int(episode_seed) + i)
		live[i] = true
	var arrays := []
	var obs := _grouped(range(agents.size()), arrays)
	wire.send({"type": "reset_result", "agents": ids, "obs": obs}, arrays)


func act(header: Dictionary, arrays: Array) -> String:
	# Apply a step's actions to the agents it names; an error text, or "" when applied
	var which := []
	var per_group := {}
	for a in header.get("agents", []):
		if not index.has(a) or not live.has(index[a]):
			return "step.agents: %s is not an agent of this episode that is still live" % str(a)
		which.append(index[a])
		per_group[group_of[index[a]]] = per_group.get(group_of[index[a]], 0) + 1
	var given: Dictionary = header.get("actions", {})
	var used := {}
	for i in which:
		var g: String = group_of[i]
		if not given.has(g):
			return "step.actions: no entry for group %s" % g
		var values: Array = arrays[int(given[g]["$array"])]
		var width: int = values.size() / per_group[g]
		var k: int = used.get(g, 0)
		used[g] = k + 1
		agents[i].nondiff_act(values[k] if width == 1 else values.slice(k * width, (k + 1) * width - 1))
	stepping = which
	return ""


func reply(wire) -> void:
	# The step's results for the agents it acted for; the ones that finished leave the episode
	var rewards := []
	var terminated := []
	var truncated := []
	var infos := []
	var named := []
	for i in stepping:
		var status: Dictionary = agents[i].nondiff_status()
		rewards.append(agents[i].nondiff_reward())
		var t: bool = status.get("terminated", false)
		var u: bool = status.get("truncated", false)
		terminated.append(t)
		truncated.append(u)
		infos.append(status.get("info", {}))
		named.append(ids[i])
	for n in range(stepping.size()):
		if terminated[n] or truncated[n]:
			live.erase(stepping[n])
	var arrays := []
	var obs := _grouped(stepping, arrays)
	var at := arrays.size()
	var n := stepping.size()
	arrays += [["<f4", [n], Wire.floats(rewards)], ["|b1", [n], Wire.bools(terminated)],
		["|b1", [n], Wire.bools(truncated)]]
	wire.send({"type": "step_result", "agents": named, "obs": obs, "rewards": {"$array": at},
		"terminated": {"$array": at + 1}, "truncated": {"$array": at + 2}, "infos": infos}, arrays)
