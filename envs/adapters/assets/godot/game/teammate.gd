# A Reach agent (agent.gd) that says who it is and in which policy group: a member of a team in a scene of
# protocol 1.3 (teams.gd); Reach's own game (main.gd) has none.
extends "res://game/agent.gd"

var agent_id := ""
var group := ""
var max_steps := MAX_STEPS  # the step after which it is truncated


func nondiff_agent() -> Dictionary:
	return {"id": agent_id, "group": group}


func nondiff_status() -> Dictionary:
	var status: Dictionary = .nondiff_status()
	if steps >= max_steps and not status["terminated"]:
		status["truncated"] = true
		status["info"] = {"is_success": false}
	return status
