"""Config of the filter stage."""

from __future__ import annotations

from pydantic import Field

from agentmill.configbase import Component


class FilterConfig(Component):
    """Which trajectories to keep. Every drop is counted by reason in the stage stats."""

    min_reward: float | None = None  # every reward (or only `reward`) must be >= this
    reward: str | None = None  # the reward `min_reward` applies to; None: all of them
    successful_only: bool = False  # status ok and the agent ended with an answer
    max_steps: int | None = Field(default=None, ge=1)
    # no malformed and no unknown-tool calls, and no tool-protocol tag left in assistant text
    valid_tool_calls_only: bool = False
