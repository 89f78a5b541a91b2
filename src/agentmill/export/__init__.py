"""Exporters: each format is a pure function of our records, validating its own output.

`export_records(fmt, trajectories)` is the one entry point the export stage and
`agentmill export` use; it returns the records and the count of trajectories it refused,
by reason. Formats that need tasks rather than trajectories (verl, trl-grpo) have their own
writers in their modules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from agentmill.records import Trajectory

FORMATS = ("trl-sft", "trl-dpo", "sharegpt", "react", "trajectory")


def _per_trajectory(fmt: str, include_reasoning: bool) -> Callable[[Trajectory], dict[str, Any]]:
    from agentmill.export.react import to_react
    from agentmill.export.sharegpt import to_sharegpt
    from agentmill.export.trajectory import to_trajectory_record
    from agentmill.export.trl_sft import to_trl_sft

    table: dict[str, Callable[[Trajectory], dict[str, Any]]] = {
        "trl-sft": lambda t: to_trl_sft(t, t.tools, include_reasoning),
        "sharegpt": lambda t: to_sharegpt(t, t.tools),
        "react": lambda t: to_react(t, t.tools),
        "trajectory": to_trajectory_record,
    }
    return table[fmt]


def export_records(
    fmt: str, trajectories: list[Trajectory], include_reasoning: bool = False
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The records of `fmt` for `trajectories`, and refusals counted by reason."""
    from agentmill.export.trl_sft import ExportError

    skipped: Counter[str] = Counter()
    if fmt == "trl-dpo":
        from agentmill.export.dpo import dpo_pairs

        return dpo_pairs(trajectories, dropped=skipped), skipped
    convert = _per_trajectory(fmt, include_reasoning)
    out = []
    for t in trajectories:
        try:
            out.append(convert(t))
        except ExportError as e:
            skipped[e.reason] += 1
    return out, skipped
