"""Exporters: each format is a pure function of our records, validating its own output.

`export_records(cfg, trajectories, tasks)` builds the records of one `ExportConfig` and counts
what it refused, by reason; `agentmill.export.write.write_export` also splits and writes them
(the export stage and `agentmill export` both call it). `verl` and `trl-grpo` rows are made
from tasks (one per task; the trajectories only lend their tools to tasks without any), every
other format from trajectories.

>>> from agentmill.export.configs import ExportConfig
>>> from agentmill.records import Message, Trajectory
>>> t = Trajectory(id="a", task_id="t", messages=[
...     Message(role="user", content="2+2?"), Message(role="assistant", content="4")])
>>> rows, refused = export_records(ExportConfig(format="react"), [t])
>>> rows[0]["completion"], dict(refused)
('Final Answer: 4', {})
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, get_args

import orjson

from agentmill.export.configs import ExportConfig, ExportFormat
from agentmill.records import Task, Trajectory

FORMATS: tuple[str, ...] = get_args(ExportFormat)
TASK_FORMATS = ("trl-grpo", "verl")  # one row per task, ground truth from the task
PAIR_FORMATS = ("trl-dpo", "sharegpt-ranking")  # one row per preference pair

Convert = Callable[[Trajectory], dict[str, Any]]


def _per_trajectory(cfg: ExportConfig, tasks: dict[str, Task]) -> Convert:
    from agentmill.export.hf import to_hf_row
    from agentmill.export.react import to_react
    from agentmill.export.sharegpt import to_sharegpt
    from agentmill.export.trajectory import to_trajectory_record
    from agentmill.export.trl_sft import to_prompt_completion, to_trl_sft
    from agentmill.export.verl import to_verl_sft

    sft = to_prompt_completion if cfg.prompt_completion else to_trl_sft
    table: dict[str, Convert] = {
        "trl-sft": lambda t: sft(t, t.tools, cfg.include_reasoning),
        "sharegpt": lambda t: to_sharegpt(t, t.tools, cfg.assistant_text),
        "react": lambda t: to_react(t, t.tools, cfg.react_form),
        "trajectory": lambda t: to_trajectory_record(t, tasks.get(t.task_id), cfg.reward),
        "verl-sft": to_verl_sft,
        "hf": lambda t: to_hf_row(t, cfg.include_reasoning, cfg.reward),
    }
    return table[cfg.format]


def _pairs(cfg: ExportConfig, trajectories: list[Trajectory], skipped: Counter[str]) -> list:
    from agentmill.export.dpo import dpo_pairs
    from agentmill.export.sharegpt import to_sharegpt_pair
    from agentmill.export.trl_sft import ExportError

    pairs = dpo_pairs(
        trajectories,
        reward=cfg.reward,
        min_margin=cfg.min_margin,
        max_pairs_per_task=cfg.max_pairs_per_task,
        simpler_mode=cfg.simpler_mode,
        simpler_min_steps=cfg.simpler_min_steps,
        simpler_min_tokens=cfg.simpler_min_tokens,
        dropped=skipped,
    )
    if cfg.format == "trl-dpo":
        return pairs
    out = []
    for pair in pairs:
        try:
            out.append(to_sharegpt_pair(pair, cfg.assistant_text))
        except ExportError as e:
            skipped[e.reason] += 1
    return out


def tasks_with_tools(tasks: list[Task], trajectories: list[Trajectory]) -> list[Task]:
    """A task whose source gave no tools gets the tools its trajectories were offered (a run's
    `rollout.tools`), else the one tool set all `trajectories` share, if they share one."""
    offered = {t.task_id: t.tools for t in trajectories if t.tools}
    sets = {orjson.dumps(t.tools) for t in trajectories}
    common = trajectories[0].tools if len(sets) == 1 else []

    def tools(task: Task) -> list[dict[str, Any]]:
        return offered.get(task.id, common)

    return [t if t.tools else t.model_copy(update={"tools": tools(t)}) for t in tasks]


def _task_rows(cfg: ExportConfig, tasks: list[Task], skipped: Counter[str]) -> list:
    from agentmill.export.grpo import grpo_rows
    from agentmill.export.verl import verl_rl_rows

    if cfg.format == "trl-grpo":
        return grpo_rows(tasks, cfg.val_fraction, skipped)
    return verl_rl_rows(
        tasks, reward=cfg.verl_reward, val_fraction=cfg.val_fraction, dropped=skipped
    )


def export_records(
    cfg: ExportConfig, trajectories: list[Trajectory], tasks: dict[str, Task] | None = None
) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The records of `cfg.format` (trajectories, or tasks for verl / trl-grpo), and the
    records refused, counted by reason."""
    from agentmill.export.trl_sft import ExportError

    tasks = tasks or {}
    skipped: Counter[str] = Counter()
    if cfg.format in TASK_FORMATS:
        with_tools = tasks_with_tools(list(tasks.values()), trajectories)
        return _task_rows(cfg, with_tools, skipped), skipped
    if cfg.format in PAIR_FORMATS:
        return _pairs(cfg, trajectories, skipped), skipped
    convert = _per_trajectory(cfg, tasks)
    out = []
    for t in trajectories:
        try:
            out.append(convert(t))
        except ExportError as e:
            skipped[e.reason] += 1
    return out, skipped
