"""TRL prompt-only records for GRPO and other online RL, one per task.

`{"id", "task_id", "prompt": [messages], "ground_truth": str | None, "ground_truth_format":
"text" | "json", "expected_calls": str | None, "ask_for": str | None, "split"}`; `split` is
the task's own split, else a hash of its id; `id` is the task id. Every extra column reaches
TRL reward functions as a keyword argument; `agentmill.integrations.trl` reads them back. So
that Arrow sees one type per column, a ground truth that is not a string (a number, a list of
acceptable answers) is stored as JSON text with `ground_truth_format: "json"`, and
`expected_calls` / `ask_for` as JSON text. Tools are not per row in GRPO: pass
them to `GRPOTrainer(tools=...)` as Python callables.

>>> from agentmill.records import Task
>>> rec = to_grpo(Task.create("2+2?", ["4", "four"], system="Be brief."))
>>> rec["prompt"][1], rec["ground_truth"], rec["ground_truth_format"]
({'role': 'user', 'content': '2+2?'}, '["4","four"]', 'json')
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson

from agentmill.export.splits import task_side
from agentmill.export.trl_sft import ExportError
from agentmill.records import Task


def encode_ground_truth(value: Any) -> tuple[str | None, str]:
    """(column value, format): strings and None as they are, anything else as JSON."""
    if value is None or isinstance(value, str):
        return value, "text"
    return orjson.dumps(value).decode(), "json"


def _json_or_none(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def to_grpo(task: Task, val_fraction: float = 0.05) -> dict[str, Any]:
    """One prompt-only record; raises `ExportError` for a task with no user turn."""
    if not any(m.role == "user" for m in task.prompt):
        raise ExportError("no_user_turn")
    truth, fmt = encode_ground_truth(task.ground_truth)
    expected = None if task.expected_calls is None else [c.to_dict() for c in task.expected_calls]
    return {
        "id": task.id,
        "task_id": task.id,
        "prompt": [{"role": m.role, "content": m.text} for m in task.prompt],
        "ground_truth": truth,
        "ground_truth_format": fmt,
        "expected_calls": _json_or_none(expected),
        "ask_for": _json_or_none(task.metadata.get("ask_for")),
        "split": task_side(task.id, task, val_fraction),
    }


def grpo_rows(
    tasks: list[Task], val_fraction: float = 0.05, dropped: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """One record per task that can be one; the others are counted in `dropped` by reason."""
    rows = []
    for task in tasks:
        try:
            rows.append(to_grpo(task, val_fraction))
        except ExportError as e:
            if dropped is not None:
                dropped[e.reason] += 1
    return rows
