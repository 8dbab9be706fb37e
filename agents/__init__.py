"""nondiff training backends: one folder each (sb3/, rllib/, blackbox/), behind the interface in
:mod:`agents.run.backend`, with the run layer (run/) and the config schema (config/) below them."""
