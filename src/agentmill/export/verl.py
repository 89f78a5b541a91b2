"""verl exports: the RL parquet (+ the tool config YAML it needs) and the multi-turn SFT parquet.

RL rows (`write_verl_rl`), one per task::

    {"data_source": "agentmill/math", "prompt": [{"role", "content"}], "ability": "math",
     "reward_model": {"style": "rule", "ground_truth": "72"},
     "extra_info": {"split", "index", "task_id", "ground_truth_format", "need_tools_kwargs",
                    "tools_kwargs": {tool: {"create_kwargs": {"ground_truth": "72"}}}},
     "agent_name": "tool_agent" | "single_turn_agent"}

`data_source` names the reward `agentmill.integrations.verl.compute_score` applies. verl offers
every tool of the YAML config to every row, so `tools_kwargs` lists every tool of the dataset on
every row, with the same `create_kwargs` keys: Arrow then has one struct type and fills nothing
with nulls. The YAML (`<name>.tools.yaml` beside the parquet) is what
`actor_rollout_ref.rollout.multi_turn.tool_config_path` points at; `tool_class` is the
`module.Class` of the verl tool that runs our tools. A ground truth that is not a string is
stored as JSON with `ground_truth_format: "json"`.

SFT rows (`to_verl_sft`): `messages` in the OpenAI shape, every message with the same keys
(`role`, `content`, `tool_calls`, `tool_call_id`, `name`) and tool-call `arguments` as JSON text,
so Arrow neither merges argument dicts nor adds null keys; `tools` a per-row nested list (verl
wants a list, not a JSON string). Caveat: tools with different parameter names in one file are
merged by Arrow into one struct, so a tool's `properties` read back with the other tools' keys as
nulls; `read_verl_sft` strips those nulls.

>>> from agentmill.records import Task
>>> row = to_verl_rl(Task.create("6*12?", "72"), index=0)
>>> row["data_source"], row["reward_model"], row["agent_name"]
('agentmill/math', {'style': 'rule', 'ground_truth': '72'}, 'single_turn_agent')
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentmill.export.grpo import encode_ground_truth
from agentmill.export.splits import task_split
from agentmill.export.trl_sft import ExportError
from agentmill.records import Message, Task, Trajectory


def openai_tool(tool: dict[str, Any]) -> dict[str, Any]:
    """A tool schema in the `{"type": "function", "function": {...}}` shape."""
    return tool if "function" in tool else {"type": "function", "function": tool}


def tool_name(tool: dict[str, Any]) -> str:
    return str(openai_tool(tool)["function"].get("name", ""))


def to_verl_rl(
    task: Task,
    index: int,
    *,
    reward: str = "math",
    tool_names: list[str] | None = None,
    val_fraction: float = 0.05,
) -> dict[str, Any]:
    """One RL row; `tool_names`: every tool of the dataset (default: the task's own)."""
    if not any(m.role == "user" for m in task.prompt):
        raise ExportError("no_user_turn")
    truth, fmt = encode_ground_truth(task.ground_truth)
    names = tool_names if tool_names is not None else [tool_name(t) for t in task.tools]
    extra: dict[str, Any] = {"split": task_split(task.id, val_fraction), "index": index}
    extra.update(task_id=task.id, ground_truth_format=fmt, need_tools_kwargs=bool(task.tools))
    if names:
        kwargs = {"create_kwargs": {"ground_truth": truth or ""}}
        extra["tools_kwargs"] = {name: kwargs for name in names}
    return {
        "data_source": f"agentmill/{reward}",
        "prompt": [{"role": m.role, "content": m.text} for m in task.prompt],
        "ability": reward,
        "reward_model": {"style": "rule", "ground_truth": truth or ""},
        "extra_info": extra,
        "agent_name": "tool_agent" if task.tools else "single_turn_agent",
    }


def verl_tool_config(tools: list[dict[str, Any]], tool_class: str) -> dict[str, Any]:
    """The YAML tool config verl reads, as a dict (one entry per distinct tool name).

    >>> verl_tool_config([{"name": "calc"}], "pkg.CalcTool")["tools"][0]["tool_schema"]
    {'type': 'function', 'function': {'name': 'calc'}}
    """
    unique = {tool_name(t): openai_tool(t) for t in tools}
    entries = [
        {"class_name": tool_class, "config": {"type": "native"}, "tool_schema": schema}
        for schema in unique.values()
    ]
    return {"tools": entries}


def write_verl_rl(
    tasks: list[Task],
    path: Path,
    *,
    reward: str = "math",
    tool_class: str | None = None,
    val_fraction: float = 0.05,
    dropped: Counter[str] | None = None,
) -> tuple[Path, Path | None]:
    """Write the RL parquet and, when tasks have tools, `<stem>.tools.yaml` beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    all_tools = [t for task in tasks for t in task.tools]
    if all_tools and tool_class is None:
        raise ValueError("tasks have tools: pass tool_class, the verl tool class that runs them")
    names = list(dict.fromkeys(tool_name(t) for t in all_tools))
    rows = _rows(
        tasks,
        dropped,
        lambda task, i: to_verl_rl(
            task, i, reward=reward, tool_names=names, val_fraction=val_fraction
        ),
    )
    pq.write_table(pa.Table.from_pylist(rows), path)
    if not all_tools:
        return path, None
    config_path = path.with_name(f"{path.stem}.tools.yaml")
    config = verl_tool_config(all_tools, tool_class or "")
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config_path


def _rows(items: list[Any], dropped: Counter[str] | None, make: Any) -> list[dict[str, Any]]:
    rows = []
    for item in items:
        try:
            rows.append(make(item, len(rows)))
        except ExportError as e:
            if dropped is not None:
                dropped[e.reason] += 1
    return rows


def _sft_message(m: Message) -> dict[str, Any]:
    if any(c.function.arguments is None for c in m.tool_calls or []):
        raise ExportError("malformed_tool_call", "a tool call's arguments did not parse")
    out = m.to_openai(dict_arguments=False)
    out["content"] = m.text
    out.setdefault("tool_calls", [])
    out.setdefault("tool_call_id", None)
    out.setdefault("name", None)
    return out


def to_verl_sft(t: Trajectory) -> dict[str, Any]:
    """One multi-turn SFT row; raises `ExportError` when it cannot be one."""
    if not t.messages or t.messages[-1].role != "assistant" or t.messages[-1].tool_calls:
        raise ExportError("ends_without_answer", "the last message is not an assistant answer")
    return {
        "id": t.id,
        "task_id": t.task_id,
        "messages": [_sft_message(m) for m in t.messages],
        "tools": [openai_tool(tool) for tool in t.tools],
    }


def write_verl_sft(
    trajectories: list[Trajectory], path: Path, dropped: Counter[str] | None = None
) -> Path:
    """Write the multi-turn SFT parquet of the trajectories that can be rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows(trajectories, dropped, lambda t, _i: to_verl_sft(t))
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def strip_nulls(value: Any) -> Any:
    """`value` with every dict key whose value is None removed, recursively.

    >>> strip_nulls({"a": None, "b": [{"c": 1, "d": None}]})
    {'b': [{'c': 1}]}
    """
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def read_verl_sft(path: Path) -> list[dict[str, Any]]:
    """The SFT rows as written: tool schemas without the null keys Arrow added."""
    import pyarrow.parquet as pq

    rows = pq.read_table(path).to_pylist()
    for row in rows:
        row["tools"] = strip_nulls(row["tools"])
    return rows


def decode_arguments(arguments: str) -> dict[str, Any]:
    """Tool-call arguments as a dict, from the JSON text the SFT parquet holds."""
    return orjson.loads(arguments)
