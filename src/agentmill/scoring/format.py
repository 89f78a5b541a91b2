"""Format reward: the mean of simple pass/fail checks on the shape of a trajectory.

Checks (each 1.0 or 0.0; the reward is the mean of those in `cfg.require`, None if empty):

- `boxed`: the final answer contains a complete `\\boxed{...}`.
- `answer`: a non-empty final answer, and the trajectory ended normally (`stop_reason` is
  `stop` or `answer`, not a limit or a cut-off reply).
- `well_formed_calls`: every assistant tool call's arguments parsed (and the agent counted no
  malformed call, when its stats are there).
- `no_tool_errors`: the agent counted no tool error and no call to an unknown tool; without
  agent stats, no tool observation starts with `Error:` (how tools report problems).

>>> import asyncio
>>> t = Trajectory(id="t", task_id="x", messages=[], final_answer="\\\\boxed{4}")
>>> asyncio.run(FormatReward(FormatRewardConfig(require=["boxed", "answer"])).score(t, None))
1.0
"""

from __future__ import annotations

from collections.abc import Callable

from agentmill.records import Task, Trajectory
from agentmill.scoring.configs import FormatRewardConfig
from agentmill.scoring.math import last_boxed
from agentmill.scoring.text import final_text

NORMAL_STOPS = ("stop", "answer")


def has_boxed(trajectory: Trajectory) -> bool:
    """The final answer holds a complete `\\boxed{...}`."""
    return last_boxed(final_text(trajectory)) is not None


def has_answer(trajectory: Trajectory) -> bool:
    """A non-empty final answer after a normal end.

    >>> has_answer(Trajectory(id="t", task_id="x", messages=[], final_answer="4",
    ...                       stop_reason="max_steps"))
    False
    """
    return bool(final_text(trajectory).strip()) and trajectory.stop_reason in NORMAL_STOPS


def well_formed_calls(trajectory: Trajectory) -> bool:
    """Every tool call's arguments parsed as a JSON object."""
    if trajectory.agent is not None and trajectory.agent.malformed_calls:
        return False
    calls = (c for m in trajectory.messages if m.role == "assistant" for c in m.tool_calls or [])
    return all(c.function.arguments is not None for c in calls)


def no_tool_errors(trajectory: Trajectory) -> bool:
    """No tool failed and no unknown tool was called."""
    agent = trajectory.agent
    if agent is not None:
        return agent.tool_errors == 0 and agent.unknown_tool_calls == 0
    tool_texts = (m.text for m in trajectory.messages if m.role == "tool")
    return not any(text.startswith("Error:") for text in tool_texts)


CHECKS: dict[str, Callable[[Trajectory], bool]] = {
    "boxed": has_boxed,
    "answer": has_answer,
    "well_formed_calls": well_formed_calls,
    "no_tool_errors": no_tool_errors,
}


def format_score(trajectory: Trajectory, require: list[str]) -> float | None:
    """The mean of the named checks; None when none is required.

    >>> format_score(Trajectory(id="t", task_id="x", messages=[], final_answer="4"),
    ...              ["boxed", "answer"])
    0.5
    """
    if not require:
        return None
    return sum(CHECKS[name](trajectory) for name in require) / len(require)


class FormatReward:
    """`format_score` with the checks `cfg.require` names; needs no task."""

    def __init__(self, cfg: FormatRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        return format_score(trajectory, list(self.cfg.require))
