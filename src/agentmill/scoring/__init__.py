"""Verifiable rewards: pure functions, plus `Reward` objects the score stage applies.

A reward object has a `name` and `async score(trajectory, task) -> float | None`
(`None`: no opinion, e.g. no ground truth). Rewards are looked up by the config's `type` in
one visible table and imported lazily.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol, runtime_checkable

from agentmill.records import Task, Trajectory


@runtime_checkable
class Reward(Protocol):
    name: str

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None: ...


# type -> "module:class"; the class takes the reward's config
REWARDS: dict[str, str] = {
    "math": "agentmill.scoring.math:MathReward",
    "code": "agentmill.scoring.code:CodeReward",
    "tool_call": "agentmill.scoring.tool_call:ToolCallReward",
    "format": "agentmill.scoring.format:FormatReward",
    "exact": "agentmill.scoring.text:ExactReward",
    "contains": "agentmill.scoring.text:ContainsReward",
    "regex": "agentmill.scoring.text:RegexReward",
}


def build_reward(cfg: Any) -> Reward:
    module, _, attr = REWARDS[cfg.type].partition(":")
    return getattr(importlib.import_module(module), attr)(cfg)


def math_reward(response: str, ground_truth: str) -> float:
    """1.0 when the final answer in `response` equals `ground_truth` mathematically, else 0.0.

    >>> math_reward("so the total is \\\\boxed{\\\\frac{1}{2}}", "0.5")
    1.0
    """
    from agentmill.scoring.math import math_reward as impl

    return impl(response, ground_truth)


__all__ = ["REWARDS", "Reward", "build_reward", "math_reward"]
