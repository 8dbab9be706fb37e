"""The RLlib backend (``backend``), its checkpointable state (``state``) and the private
local Ray (``local``).

Nothing here is imported unless ``--backend rllib`` is chosen or an RLlib checkpoint is loaded.
"""
