"""The simple trajectory form: `{id, task_id, task, messages, final_reward}`, one per line.

`messages` are in the OpenAI shape with tool-call arguments as dicts; a call whose arguments
did not parse keeps its raw text as a string (this form is for reading, not for a chat
template). `final_reward` is the named reward, or the mean of all rewards when `reward` is
None, or None when the trajectory has none.

>>> from agentmill.records import Message, Task, Trajectory
>>> task = Task.create("2+2?", "4")
>>> t = Trajectory(id="a", task_id=task.id, rewards={"math": 1.0},
...                messages=[*task.prompt, Message(role="assistant", content="4")])
>>> rec = to_trajectory_record(t, task)
>>> rec["task"]["ground_truth"], rec["final_reward"], rec["messages"][-1]["content"]
('4', 1.0, '4')
"""

from __future__ import annotations

from typing import Any

from agentmill.export.trl_sft import ExportError
from agentmill.records import Task, Trajectory


def final_reward(t: Trajectory, reward: str | None = None) -> float | None:
    """The named reward, or the mean of all rewards (None when there is none).

    >>> final_reward(Trajectory(id="a", task_id="t", messages=[], rewards={"x": 1, "y": 0}))
    0.5
    """
    if reward is not None:
        return t.rewards.get(reward)
    values = list(t.rewards.values())
    return sum(values) / len(values) if values else None


def to_trajectory_record(
    t: Trajectory, task: Task | None = None, reward: str | None = None
) -> dict[str, Any]:
    """The simple form of one trajectory; raises `ExportError` when it has no messages."""
    if not t.messages:
        raise ExportError("no_messages")
    return {
        "id": t.id,
        "task_id": t.task_id,
        "task": task.to_dict() if task is not None else {"id": t.task_id},
        "messages": [m.to_openai(dict_arguments=True) for m in t.messages],
        "final_reward": final_reward(t, reward),
    }
