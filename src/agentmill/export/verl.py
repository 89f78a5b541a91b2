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
wants a list of dicts, not a JSON string: it hands them to `apply_chat_template`).

Limitation (no Arrow type avoids it): verl reads the file with pandas, and Arrow stores all
tools of a file as ONE struct type, so when the tools of a file differ in nested keys (other
parameter names, a `description` only some have), every tool reads back with the other tools'
keys set to None, and the chat template shows them as `null`. The rows are exact when every
tool of the file has the same key structure (one tool, or one tool set per file).
`null_filled_rows` counts the rows affected; `read_verl_sft` strips the nulls again. String
arguments render correctly with templates that test `arguments is string` (Qwen3); templates
that always apply `tojson` (Qwen2.5, Llama 3.1) quote them a second time.

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

from agentmill.errors import UserError
from agentmill.export.grpo import encode_ground_truth
from agentmill.export.splits import task_side
from agentmill.export.trl_sft import ExportError
from agentmill.records import Message, Task, Trajectory
from agentmill.store import write_atomic


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
    extra: dict[str, Any] = {"split": task_side(task.id, task, val_fraction), "index": index}
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


def verl_rl_rows(
    tasks: list[Task],
    *,
    reward: str = "math",
    val_fraction: float = 0.05,
    dropped: Counter[str] | None = None,
) -> list[dict[str, Any]]:
    """The RL rows of the tasks that can be rows (the others counted in `dropped`)."""
    names = list(dict.fromkeys(tool_name(t) for task in tasks for t in task.tools))

    def make(task: Task, i: int) -> dict[str, Any]:
        return to_verl_rl(task, i, reward=reward, tool_names=names, val_fraction=val_fraction)

    return _rows(tasks, dropped, make)


def write_tool_config(tasks: list[Task], path: Path, tool_class: str | None) -> Path | None:
    """Write `<stem>.tools.yaml` beside `path` when the tasks have tools; its path or None."""
    all_tools = [t for task in tasks for t in task.tools]
    if not all_tools:
        return None
    if not tool_class:
        raise UserError(
            "verl export: the tasks have tools; set tool_class (export[].tool_class or "
            "--tool-class) to the module.Class of the verl tool that runs them"
        )
    config_path = path.with_name(f"{path.stem}.tools.yaml")
    config = verl_tool_config(all_tools, tool_class)
    write_atomic(config_path, yaml.safe_dump(config, sort_keys=False).encode())
    return config_path


def write_parquet(rows: list[dict[str, Any]], path: Path) -> Path:
    """Write rows as one parquet file (types inferred by Arrow), atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.replace(path)
    return path


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
    config_path = write_tool_config(tasks, path, tool_class)
    rows = verl_rl_rows(tasks, reward=reward, val_fraction=val_fraction, dropped=dropped)
    return write_parquet(rows, path), config_path


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


def verl_sft_rows(
    trajectories: list[Trajectory], dropped: Counter[str] | None = None
) -> list[dict[str, Any]]:
    """The SFT rows of the trajectories that can be rows (the others counted in `dropped`)."""
    return _rows(trajectories, dropped, lambda t, _i: to_verl_sft(t))


def write_verl_sft(
    trajectories: list[Trajectory], path: Path, dropped: Counter[str] | None = None
) -> Path:
    """Write the multi-turn SFT parquet of the trajectories that can be rows."""
    return write_parquet(verl_sft_rows(trajectories, dropped), path)


def null_filled_rows(rows: list[dict[str, Any]], path: Path) -> int:
    """How many of `rows` read back from `path` with null keys Arrow added (see the caveat)."""
    import pyarrow.parquet as pq

    back = pq.read_table(path).to_pylist()
    return sum(a != b for a, b in zip(rows, back, strict=True))


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
