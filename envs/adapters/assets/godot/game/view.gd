# What one agent's camera sees (--camera=N): the arena, the pillars, its own goal and itself, drawn by the
# engine's 2-D renderer into the agent's own Viewport (no other agent is in it). The shapes are drawn once;
# a step moves them, which the renderer takes at once (a redraw would wait for the next frame).
extends Node2D

const FLOOR := Color(0.92, 0.92, 0.88)
const WALL := Color(0.25, 0.25, 0.3)
const GOAL := Color(0.1, 0.7, 0.2)
const BALL := Color(0.85, 0.15, 0.1)

var arena := Vector2()
var pillars := []
var pillar_radius := 0.0
var goal: Node2D
var ball: Node2D


class Disc extends Node2D:
	var radius := 1.0
	var color := Color()

	func _draw() -> void:
		draw_circle(Vector2(), radius, color)


func _init(arena_size: Vector2, pillar_at: Array, pillar_r: float, goal_r: float, ball_r: float) -> void:
	arena = arena_size
	pillars = pillar_at
	pillar_radius = pillar_r
	goal = _disc(goal_r, GOAL)
	ball = _disc(ball_r, BALL)


func _disc(radius: float, color: Color) -> Node2D:
	var disc := Disc.new()
	disc.radius = radius
	disc.color = color
	add_child(disc)
	return disc


func _draw() -> void:  # beyond the walls is the Viewport's clear colour, WALL (project.godot): no overdraw
	draw_rect(Rect2(Vector2(), arena), FLOOR)
	for p in pillars:
		draw_circle(p, pillar_radius, WALL)


func place(goal_at: Vector2, ball_at: Vector2) -> void:
	goal.position = goal_at
	ball.position = ball_at
