"""The ``policies:`` section: several policies on a PettingZoo parallel env, each for the agents whose ids
match its patterns, with its own network, optimiser and settings (agents/sb3/multipolicy.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from agents.config.section import Section, layer_sizes

POLICY_ALGOS = ("ppo", "a2c")
"""The algorithms a ``policies:`` map trains (``--backend sb3``)."""


class PolicySpec(Section):
    """One policy of ``policies:``: the agents it acts for and the ``agent:`` settings it overrides.

    Each agent goes to the first policy (in the file's order) with a pattern that matches its id. A setting
    left out is the ``agent:`` section's. ``n_steps`` is the same for all policies (they collect in
    lock-step), so it is ``agent.n_steps`` only.
    """

    agents: list[str] = Field(min_length=1)
    """fnmatch patterns over agent ids (``possible_agents``), e.g. ``["adversary_*"]`` or ``["*"]``."""
    learning_rate: float | None = Field(default=None, gt=0)
    """As ``agent.learning_rate``."""
    lr_schedule: Literal["constant", "linear"] | None = None
    """As ``agent.lr_schedule``."""
    gamma: float | None = Field(default=None, gt=0, le=1)
    """As ``agent.gamma``."""
    gae_lambda: float | None = Field(default=None, ge=0, le=1)
    """As ``agent.gae_lambda``."""
    batch_size: int | None = Field(default=None, gt=0)
    """As ``agent.batch_size`` (PPO)."""
    n_epochs: int | None = Field(default=None, gt=0)
    """As ``agent.n_epochs`` (PPO)."""
    clip_range: float | None = Field(default=None, gt=0)
    """As ``agent.clip_range`` (PPO)."""
    ent_coef: float | None = Field(default=None, ge=0)
    """As ``agent.ent_coef``."""
    vf_coef: float | None = Field(default=None, ge=0)
    """As ``agent.vf_coef``."""
    max_grad_norm: float | None = Field(default=None, gt=0)
    """As ``agent.max_grad_norm``."""
    net_arch: list[int] | None = None
    """As ``agent.net_arch``."""
    activation: Literal["tanh", "relu"] | None = None
    """As ``agent.activation``."""
    log_std_init: float | None = None
    """As ``agent.log_std_init``."""
    ortho_init: bool | None = None
    """As ``agent.ortho_init``."""

    @field_validator("net_arch")
    @classmethod
    def _positive_layers(cls, v: list[int] | None) -> list[int] | None:
        return None if v is None else layer_sizes(v, "net_arch", "[64, 64]")

    @field_validator("agents")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        if any(not p.strip() for p in v):
            raise ValueError("an agents pattern is empty; give agent ids or fnmatch patterns, e.g. 'agent_*'")
        return v

    def overrides(self) -> dict[str, Any]:
        """The ``agent:`` settings this policy gives (``agents`` excluded; a setting left out, or null, is
        ``agent:``'s)."""
        return {k: v for k in self.model_fields_set if k != "agents" and (v := getattr(self, k)) is not None}
