"""Tasks from traces: the turn's query and its final answer, appended to a file incrementally.

A task keeps the conversation up to and including the turn's user message as its `prompt`
(system, earlier turns, the query), the final answer as `ground_truth`, and the trajectory's
tool schemas. Its `metadata.qa_hash` (sha256 of query, newline, answer: astuner's key) makes
appending idempotent: a task file only ever gains the hashes it does not hold yet, and each
task's `split` comes from a hash of its id, so it never changes side as the file grows.

The turn's user message is `metadata["query_index"]` when the ingester set it (mini-swe: the
task message, not later format-error messages), else the last user message.

>>> from agentmill.records import Message, Trajectory
>>> t = Trajectory(id="t1", task_id="x", final_answer="4", messages=[
...     Message(role="user", content="2+2?"), Message(role="assistant", content="4")])
>>> task = task_from_trajectory(t)
>>> task.query, task.ground_truth, task.metadata["source_record"], task.split
('2+2?', '4', 't1', 'train')
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from agentmill.astuner import qa_hash
from agentmill.export.splits import task_split
from agentmill.ingest.span_messages import text_of
from agentmill.records import Task, Trajectory, content_hash
from agentmill.store import JsonlWriter, iter_jsonl


def task_from_trajectory(t: Trajectory, val_fraction: float = 0.3) -> Task | None:
    """The task of `t`'s turn, or None when it has no user query or no final answer."""
    record = task_record(t.to_dict(), val_fraction)
    return None if record is None else Task.model_validate(record)


def task_record(t: dict[str, Any], val_fraction: float = 0.3) -> dict[str, Any] | None:
    """`task_from_trajectory` on a trajectory's canonical dict (`Trajectory.to_dict()`),
    giving the task's canonical dict (what its line holds) without building the models."""
    messages, answer = t["messages"], t.get("final_answer")
    index = query_index(messages, t.get("metadata", {}))
    if index is None or answer is None:
        return None
    prompt = [_context(m) for m in messages[: index + 1]]
    tools = t.get("tools") or []
    metadata = {
        "answer": answer,
        "qa_hash": qa_hash(text_of(messages[index].get("content")), answer),
        "missing_tools": missing_tools(tools),
        "source_record": t["id"],
    }
    task_id = content_hash({"prompt": prompt, "ground_truth": answer, "tools": tools})
    return {
        "id": task_id,
        "prompt": prompt,
        "ground_truth": answer,
        "tools": tools,
        "metadata": metadata,
        "provenance": t["provenance"],
        "split": task_split(task_id, val_fraction),
    }


def query_index(messages: list[dict[str, Any]], metadata: dict[str, Any]) -> int | None:
    """Index of the turn's user message: `metadata.query_index`, else the last user message."""
    index = metadata.get("query_index")
    if type(index) is int and 0 <= index < len(messages):
        return index if messages[index]["role"] == "user" else None
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    return users[-1] if users else None


def _context(m: dict[str, Any]) -> dict[str, Any]:
    """A prompt message without per-step usage or hidden reasoning."""
    if "usage" in m or "reasoning" in m:
        return {k: v for k, v in m.items() if k != "usage" and k != "reasoning"}
    return m


@functools.cache
def builtin_tool_names() -> frozenset[str]:
    """Names agentmill's built-in tools answer to by default (see rollout.tools.TOOLS)."""
    from agentmill.rollout.configs import (
        CalculatorToolConfig,
        PythonToolConfig,
        SearchToolConfig,
    )

    search = SearchToolConfig()
    names = (CalculatorToolConfig().name, PythonToolConfig().name, search.name, search.open_name)
    return frozenset(names)


def missing_tools(tools: list[dict[str, Any]]) -> list[str]:
    """Names of the offered tools that no built-in agentmill tool provides."""
    known = builtin_tool_names()
    names = [_tool_name(t) for t in tools]
    return sorted({n for n in names if n and n not in known})


def _tool_name(schema: dict[str, Any]) -> str | None:
    fn = schema.get("function") if isinstance(schema.get("function"), dict) else schema
    name = fn.get("name")
    return name if isinstance(name, str) else None


def existing_hashes(path: Path) -> set[str]:
    """The qa_hashes of a task file (agentmill or astuner lines); unreadable lines ignored."""
    out: set[str] = set()
    for _, line in iter_jsonl(path):  # a torn last line is never read
        try:
            h = orjson.loads(line).get("metadata", {}).get("qa_hash")
        except (orjson.JSONDecodeError, AttributeError):
            continue
        if h:
            out.add(str(h))
    return out


def append_tasks(tasks: Iterable[Task], path: Path) -> tuple[int, int]:
    """Append the tasks whose qa_hash is not in `path` yet, each with one unbuffered write
    (a torn last line is cut off first); returns (added, already present)."""
    return append_task_lines(((task_key(t), t.to_json()) for t in tasks), path)


def append_task_lines(
    items: Iterable[tuple[str, bytes | memoryview]], path: Path, buffer: int = 0
) -> tuple[int, int]:
    """`append_tasks` for tasks already serialized: (qa_hash, JSON line) pairs; `buffer`
    as in `JsonlWriter`."""
    seen = existing_hashes(path)
    writer: JsonlWriter | None = None
    added = present = 0
    try:
        for h, line in items:
            if h in seen:
                present += 1
                continue
            writer = writer or JsonlWriter(path, buffer)
            writer.append(line)
            seen.add(h)
            added += 1
    finally:
        if writer is not None:
            writer.close()
    return added, present


def task_key(task: Task) -> str:
    """The key a task file is deduplicated by: its qa_hash."""
    return str(task.metadata.get("qa_hash") or qa_hash(task.query, str(task.ground_truth)))
