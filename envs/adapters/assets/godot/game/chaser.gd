# A chaser: Reach's ball with a continuous push (a force in [-1, 1]^2) that sees only the way to its goal
# and its velocity: the other team's spaces (teams.gd).
extends "res://game/teammate.gd"


func nondiff_spaces() -> Dictionary:
	return {"observation_space": {"type": "Box", "low": -5, "high": 5, "shape": [4], "dtype": "float32"},
		"action_space": {"type": "Box", "low": -1, "high": 1, "shape": [2], "dtype": "float32"}}


func nondiff_act(action) -> void:
	steps += 1
	applied_force = Vector2(clamp(float(action[0]), -1.0, 1.0), clamp(float(action[1]), -1.0, 1.0)) * FORCE


func nondiff_observation() -> Array:
	var to_goal := (goal - global_position) / 400.0
	var obs := [to_goal.x, to_goal.y, linear_velocity.x / 300.0, linear_velocity.y / 300.0]
	for i in range(obs.size()):
		obs[i] = clamp(obs[i], -5.0, 5.0)
	return obs
