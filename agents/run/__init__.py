"""The run machinery every backend shares: the one training loop, the session, run dirs and checkpoints."""
