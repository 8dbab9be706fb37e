# One agent of Reach: a ball pushed in one of four directions (or not at all), observing the way to its goal,
# its velocity and eight raycasts against walls and pillars; success is reaching the goal within MAX_STEPS.
extends RigidBody2D

const View = preload("res://game/view.gd")

const WALLS := 2
const RAYS := 8
const RAY_LENGTH := 200.0
const FORCE := 600.0
const RADIUS := 12.0
const GOAL_RADIUS := 30.0
const MAX_STEPS := 150
const VIEW := 400.0  # world pixels across an agent's camera (--camera=N), centred on the agent
const PUSH := [Vector2(0, 0), Vector2(1, 0), Vector2(-1, 0), Vector2(0, 1), Vector2(0, -1)]

var rng := RandomNumberGenerator.new()
var rays := []  # RayCast2D: cast by the engine each physics tick, before the sync node reads them
var goal := Vector2()
var steps := 0
var last_distance := 0.0
var reward := 0.0
var view: Node2D  # what this agent's camera sees (game/view.gd), with --camera=N only


func _init() -> void:
	gravity_scale = 0.0
	linear_damp = 2.0
	mode = RigidBody2D.MODE_CHARACTER
	can_sleep = false
	collision_layer = 1
	collision_mask = WALLS  # never another agent
	var circle := CircleShape2D.new()
	circle.radius = RADIUS
	var col := CollisionShape2D.new()
	col.shape = circle
	add_child(col)
	for k in range(RAYS):
		var ray := RayCast2D.new()
		ray.cast_to = Vector2(RAY_LENGTH, 0).rotated(k * TAU / RAYS)
		ray.collision_mask = WALLS
		ray.enabled = true
		add_child(ray)
		rays.append(ray)


func nondiff_spaces() -> Dictionary:
	return {"observation_space": {"type": "Box", "low": -5, "high": 5, "shape": [4 + RAYS], "dtype": "float32"},
		"action_space": {"type": "Discrete", "n": PUSH.size()}}


func nondiff_reset(episode_seed) -> void:
	if episode_seed != null:
		rng.seed = int(episode_seed)
	global_position = Vector2(rng.randf_range(60, 160), rng.randf_range(60, 540))
	goal = Vector2(rng.randf_range(640, 740), rng.randf_range(60, 540))
	linear_velocity = Vector2()
	applied_force = Vector2()
	steps = 0
	last_distance = global_position.distance_to(goal)
	reward = 0.0
	if is_inside_tree():
		for ray in rays:  # cast from where the agent is now, not where it was at the last tick
			ray.force_raycast_update()


func nondiff_act(action) -> void:
	steps += 1
	applied_force = PUSH[clamp(int(action), 0, PUSH.size() - 1)] * FORCE


func nondiff_status() -> Dictionary:
	var distance := global_position.distance_to(goal)
	var reached := distance < GOAL_RADIUS
	reward = (last_distance - distance) / 100.0 - 0.01 + (5.0 if reached else 0.0)
	last_distance = distance
	var truncated := steps >= MAX_STEPS and not reached
	return {"terminated": reached, "truncated": truncated,
		"info": {"is_success": reached} if reached or truncated else {}}


func nondiff_reward() -> float:
	return reward


func nondiff_camera(viewport: Viewport) -> void:
	# The sync node's camera (--camera=N): the first call fills the agent's Viewport, each call aims it.
	if view == null:
		var main := get_parent()
		view = View.new(main.ARENA, main.PILLARS, main.PILLAR_RADIUS, GOAL_RADIUS, RADIUS)
		viewport.add_child(view)
	view.place(goal, global_position)
	var s: float = viewport.size.x / VIEW
	var centre: Vector2 = viewport.size / 2 - global_position * s
	viewport.canvas_transform = Transform2D(Vector2(s, 0), Vector2(0, s), centre)


func nondiff_observation() -> Array:
	var to_goal := (goal - global_position) / 400.0
	var obs := [to_goal.x, to_goal.y, linear_velocity.x / 300.0, linear_velocity.y / 300.0]
	for ray in rays:
		obs.append((ray.get_collision_point() - global_position).length() / RAY_LENGTH
			if ray.is_colliding() else 1.0)
	for i in range(obs.size()):
		obs[i] = clamp(obs[i], -5.0, 5.0)
	return obs
