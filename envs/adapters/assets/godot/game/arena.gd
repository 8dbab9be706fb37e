# Reach's arena, built the same way by both scenes (main.gd: Reach; teams.gd: two teams): four walls around
# it and round pillars, static bodies on the physics layer WALLS, the one the agents collide with.
extends Reference

const WALLS := 2  # physics layer bit 1: walls and pillars


static func build(parent: Node, size: Vector2, pillars: Array, pillar_radius: float) -> void:
	for box in [[Vector2(size.x / 2, -10), Vector2(size.x / 2 + 20, 10)],
			[Vector2(size.x / 2, size.y + 10), Vector2(size.x / 2 + 20, 10)],
			[Vector2(-10, size.y / 2), Vector2(10, size.y / 2 + 20)],
			[Vector2(size.x + 10, size.y / 2), Vector2(10, size.y / 2 + 20)]]:
		var rect := RectangleShape2D.new()
		rect.extents = box[1]
		_static(parent, box[0], rect)
	for p in pillars:
		var circle := CircleShape2D.new()
		circle.radius = pillar_radius
		_static(parent, p, circle)


static func _static(parent: Node, at: Vector2, shape: Shape2D) -> void:
	var body := StaticBody2D.new()
	body.collision_layer = WALLS
	body.collision_mask = 0
	body.position = at
	var col := CollisionShape2D.new()
	col.shape = shape
	body.add_child(col)
	parent.add_child(body)
