"""Tasks from traces: prompt/answer/metadata, stable ids and splits, incremental appends."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import orjson

from agentmill.export.splits import task_split
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.chatlogs import read as read_chatlogs
from agentmill.ingest.miniswe import read as read_miniswe
from agentmill.ingest.tasks import append_tasks, missing_tools, task_from_trajectory
from agentmill.records import Message, Provenance, Task, Trajectory

FIXTURES = Path(__file__).parent / "fixtures" / "miniswe"
CALC = {"type": "function", "function": {"name": "calculator", "parameters": {}}}
SHOP = {"type": "function", "function": {"name": "order_status", "parameters": {}}}


def conversation(i: int) -> dict[str, Any]:
    """A two-turn conversation whose second turn uses a tool."""
    return {
        "id": f"c{i}",
        "tools": [CALC, SHOP],
        "messages": [
            {"role": "system", "content": "You are a shop assistant."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi! How can I help?"},
            {"role": "user", "content": f"Where is order {i}?"},
            {"role": "assistant", "content": None, "reasoning_content": "look it up",
             "tool_calls": [{"id": "k", "function": {"name": "order_status",
                                                     "arguments": json.dumps({"id": i})}}]},
            {"role": "tool", "tool_call_id": "k", "content": "shipped"},
            {"role": "assistant", "content": f"Order {i} has shipped."},
        ],
    }  # fmt: skip


def trajectories(path: Path) -> list[Trajectory]:
    return list(read_chatlogs(path, IngestOptions(), IngestStats()))


def write_log(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps(conversation(i)) + "\n" for i in range(n)))
    return path


def test_task_holds_the_turn_with_its_context_and_the_answer(tmp_path: Path) -> None:
    [t] = trajectories(write_log(tmp_path / "log.jsonl", 1))
    task = task_from_trajectory(t, val_fraction=0.3)
    assert task is not None
    assert [m.role for m in task.prompt] == ["system", "user", "assistant", "user"]
    assert task.prompt == t.messages[:4] and task.query == "Where is order 0?"
    assert task.ground_truth == "Order 0 has shipped."
    assert task.tools == [CALC, SHOP]
    expected_hash = hashlib.sha256(b"Where is order 0?\nOrder 0 has shipped.").hexdigest()
    assert task.metadata == {
        "answer": "Order 0 has shipped.",
        "qa_hash": expected_hash,
        "missing_tools": ["order_status"],  # calculator is built in
        "source_record": t.id,
    }
    assert task.provenance == t.provenance and task.provenance.source_id == "c0"
    assert task.id == Task.compute_id(task.prompt, task.ground_truth, task.tools)
    assert task.split == task_split(task.id, 0.3)


def test_prompt_messages_lose_usage_and_reasoning() -> None:
    msgs = [
        Message(role="user", content="a"),
        Message(role="assistant", content="b", reasoning="hidden"),
        Message(role="user", content="c"),
        Message(role="assistant", content="d"),
    ]
    t = Trajectory(id="t", task_id="x", messages=msgs, final_answer="d")
    task = task_from_trajectory(t)
    assert task.prompt[1] == Message(role="assistant", content="b")


def test_no_task_without_a_query_or_an_answer() -> None:
    answerless = Trajectory(id="a", task_id="x", messages=[Message(role="user", content="q")])
    queryless = Trajectory(
        id="b", task_id="x", messages=[Message(role="assistant", content="hi")], final_answer="hi"
    )
    assert task_from_trajectory(answerless) is None
    assert task_from_trajectory(queryless) is None


def test_miniswe_task_is_the_task_message_not_a_later_format_error() -> None:
    [t] = read_miniswe(FIXTURES / "v2_textbased.traj.json", IngestOptions(), IngestStats())
    assert t.messages[2].role == "user" and "Format error" in t.messages[2].text
    task = task_from_trajectory(t)
    assert [m.role for m in task.prompt] == ["system", "user"]
    assert task.query.startswith("Please solve this issue: Fix the bug in calc.py")
    assert task.ground_truth.startswith("diff --git") and task.metadata["missing_tools"] == ["bash"]
    assert task.provenance.source == "mini-swe"


def test_missing_tools_accepts_both_schema_forms() -> None:
    flat = {"name": "python"}
    assert missing_tools([CALC, SHOP, flat, {"function": {"name": "search"}}]) == ["order_status"]


def test_append_is_incremental_and_splits_never_move(tmp_path: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    first = [task_from_trajectory(t) for t in trajectories(write_log(tmp_path / "a.jsonl", 5))]
    assert append_tasks(first, out) == (5, 0)
    before = out.read_bytes()
    assert append_tasks(first, out) == (0, 5)  # re-run: nothing new
    assert out.read_bytes() == before
    # the source grows: only the new hashes are added, earlier lines stay byte for byte
    grown = [task_from_trajectory(t) for t in trajectories(write_log(tmp_path / "b.jsonl", 9))]
    assert append_tasks(grown, out) == (4, 5)
    data = out.read_bytes()
    assert data.startswith(before)
    rows = [Task.from_json(line) for line in data.splitlines()]
    assert [r.query for r in rows] == [f"Where is order {i}?" for i in range(9)]
    assert {r.id: r.split for r in rows[:5]} == {t.id: t.split for t in grown[:5]}
    assert all(r.split == task_split(r.id, 0.3) for r in rows)


def test_duplicates_in_one_batch_are_added_once(tmp_path: Path) -> None:
    [t] = trajectories(write_log(tmp_path / "a.jsonl", 1))
    task = task_from_trajectory(t)
    assert append_tasks([task, task], tmp_path / "tasks.jsonl") == (1, 1)


def test_a_torn_last_line_is_cut_off_before_appending(tmp_path: Path) -> None:
    out = tmp_path / "tasks.jsonl"
    tasks = [task_from_trajectory(t) for t in trajectories(write_log(tmp_path / "a.jsonl", 3))]
    append_tasks(tasks[:2], out)
    good = out.read_bytes()
    torn = tasks[2].to_json()[:40]
    with out.open("ab") as f:  # a kill in the middle of the third write
        f.write(torn)
    assert append_tasks(tasks, out) == (1, 2)
    lines = out.read_bytes().splitlines()
    assert out.read_bytes().startswith(good) and len(lines) == 3
    assert Task.from_json(lines[2]).id == tasks[2].id
    assert (tmp_path / "tasks.jsonl.torn").read_bytes() == torn + b"\n"


def test_qa_hashes_of_astuner_lines_are_recognised(tmp_path: Path) -> None:
    [t] = trajectories(write_log(tmp_path / "a.jsonl", 1))
    task = task_from_trajectory(t)
    out = tmp_path / "tasks.jsonl"
    line = {"main_query": task.query, "init_messages": [], "task_id": "x", "env_type": "tracing",
            "metadata": {"answer": task.ground_truth, "qa_hash": task.metadata["qa_hash"]}}  # fmt: skip
    out.write_bytes(orjson.dumps(line) + b"\nnot json\n")
    assert append_tasks([task], out) == (0, 1)


def test_provenance_source_ids_survive(tmp_path: Path) -> None:
    prov = Provenance(source="agentscope-studio", file="db.sqlite", source_id="run-9",
                      extra={"trace_id": "abc", "turn": 2})  # fmt: skip
    t = Trajectory(
        id="t9",
        task_id="x",
        messages=[Message(role="user", content="q"), Message(role="assistant", content="a")],
        final_answer="a",
        provenance=prov,
    )
    task = task_from_trajectory(t)
    assert task.provenance == prov and task.metadata["source_record"] == "t9"


def test_doctests_of_the_ingest_modules() -> None:
    import doctest

    import agentmill.ingest.chatlogs
    import agentmill.ingest.driver
    import agentmill.ingest.redact
    import agentmill.ingest.tasks

    for mod in (
        agentmill.ingest.chatlogs,
        agentmill.ingest.driver,
        agentmill.ingest.redact,
        agentmill.ingest.tasks,
    ):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__
