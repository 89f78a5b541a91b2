"""Chat-log ingester: every accepted variant checked message by message, bad lines counted."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from agentmill.errors import UserError
from agentmill.ingest.base import IngestOptions, IngestStats, read_traces
from agentmill.ingest.chatlogs import read
from agentmill.records import Message, Task, Trajectory

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def write_lines(path: Path, *records: Any) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def ingest(path: Path, strict: bool = False) -> tuple[list[Trajectory], IngestStats]:
    stats = IngestStats()
    return list(read(path, IngestOptions(strict=strict), stats)), stats


def test_openai_record_with_tools_is_read_message_by_message(tmp_path: Path) -> None:
    record = {
        "id": "conv-7",
        "model": "gpt-4o-mini",
        "created": 1767225600,
        "metadata": {"user": "u1", "rating": 5},
        "tools": [WEATHER_TOOL],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30},
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": "18C, sunny"},
            {"role": "assistant", "content": "It is 18C and sunny in Paris."},
        ],
    }
    [t], stats = ingest(write_lines(tmp_path / "log.jsonl", record))
    assert [m.role for m in t.messages] == ["system", "user", "assistant", "tool", "assistant"]
    assert t.messages[0].content == "You are helpful."
    assert t.messages[1].content == "Weather in Paris?"
    call = t.messages[2].tool_calls[0]
    assert t.messages[2].content is None
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_a",
        "get_weather",
        {"city": "Paris"},
    )
    assert (t.messages[3].tool_call_id, t.messages[3].content) == ("call_a", "18C, sunny")
    assert t.final_answer == "It is 18C and sunny in Paris."
    assert t.stop_reason == "answer"
    assert t.tools == [WEATHER_TOOL]
    assert t.model == "gpt-4o-mini" and t.created_at == 1767225600.0
    assert (t.usage.prompt_tokens, t.usage.completion_tokens) == (120, 30)
    assert t.metadata["metadata"] == {"user": "u1", "rating": 5}
    assert t.metadata["id"] == "conv-7" and t.metadata["query_index"] == 1
    assert t.provenance.source == "chat-logs" and t.provenance.source_id == "conv-7"
    assert t.provenance.extra == {"line": 1} and t.provenance.file == str(tmp_path / "log.jsonl")
    assert t.task_id == Task.compute_id(t.messages[:2], None, t.tools)
    assert t.agent.steps == 2 and t.agent.tool_calls == 1 and t.agent.by_tool == {"get_weather": 1}
    assert t.agent.malformed_calls == 0 and t.agent.unknown_tool_calls == 0
    assert stats.built == 1 and stats.read["lines"] == 1 and stats.read["messages"] == 5
    assert Trajectory.from_json(t.to_json()) == t


def test_bare_list_line_and_flat_tools_with_dict_arguments(tmp_path: Path) -> None:
    flat_tool = {"name": "lookup", "description": "Find.", "parameters": {"type": "object"}}
    record = {
        "tools": [flat_tool, {"description": "no name"}],
        "messages": [
            {"role": "user", "content": "Find x"},
            {
                "role": "assistant",
                "content": "Looking.",
                "tool_calls": [{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "x=1"},
            {"role": "assistant", "content": "x is 1"},
        ],
    }
    bare = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    [t1, t2], stats = ingest(write_lines(tmp_path / "log.jsonl", record, bare))
    assert t1.tools == [{"type": "function", "function": flat_tool}]
    assert stats.read["tool schemas without a name (dropped)"] == 1
    assert t1.messages[1].content == "Looking."
    assert t1.messages[1].tool_calls[0].function.arguments == {"q": "x"}
    assert [m.role for m in t2.messages] == ["user", "assistant"]
    assert t2.final_answer == "Hello!" and t2.provenance.source_id == "line 2"
    assert t1.id != t2.id


def test_malformed_arguments_are_kept_raw_and_counted(tmp_path: Path) -> None:
    record = {
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "b1", "function": {"name": "get_weather", "arguments": '{"city": "Par'}},
                    {"id": "b2", "function": {"name": "get_weather", "arguments": "[1, 2]"}},
                    {"id": "b3", "function": {"name": "get_weather", "arguments": ["Paris"]}},
                    {"id": "b4", "function": {"name": "teleport", "arguments": ""}},
                ],
            },
        ],
    }
    [t], stats = ingest(write_lines(tmp_path / "log.jsonl", record))
    calls = t.messages[1].tool_calls
    assert [c.function.arguments for c in calls] == [None, None, None, {}]
    assert [c.function.raw_arguments for c in calls] == [
        '{"city": "Par',
        "[1, 2]",
        '["Paris"]',
        None,
    ]
    assert t.agent.malformed_calls == 3 and t.agent.unknown_tool_calls == 1
    assert stats.read["malformed tool-call arguments"] == 3
    assert t.final_answer is None and t.stop_reason == "no_answer"


def test_content_forms_and_reasoning(tmp_path: Path) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    record = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": ["What is this?", image]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "A "}, {"type": "text", "text": "cat."}],
                "reasoning_content": "Looks like fur and whiskers.",
            },
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": "Yes.", "reasoning": [{"type": "text", "text": "ok"}]},
        ]
    }
    [t], _ = ingest(write_lines(tmp_path / "log.jsonl", record))
    assert t.messages[0] == Message(role="system", content="Be brief.")
    assert t.messages[1].content == [{"type": "text", "text": "What is this?"}, image]
    assert (
        t.messages[2].text == "A cat." and t.messages[2].reasoning == "Looks like fur and whiskers."
    )
    assert t.messages[4].reasoning == "ok"
    assert t.metadata["query_index"] == 3 and t.final_answer == "Yes."


def test_legacy_function_call_and_function_role(tmp_path: Path) -> None:
    record = {
        "functions": [{"name": "add", "parameters": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "2+3?"},
            {"role": "assistant", "content": None,
             "function_call": {"name": "add", "arguments": '{"a": 2, "b": 3}'}},
            {"role": "function", "name": "add", "content": "5"},
            {"role": "assistant", "content": "5"},
        ],
    }  # fmt: skip
    [t], _ = ingest(write_lines(tmp_path / "log.jsonl", record))
    call = t.messages[1].tool_calls[0]
    assert call.function.name == "add" and call.function.arguments == {"a": 2, "b": 3}
    assert t.messages[2].role == "tool" and t.messages[2].tool_call_id == call.id
    assert t.messages[2].name == "add" and t.messages[2].content == "5"
    assert t.tools == [{"type": "function", "function": record["functions"][0]}]


def test_final_answer_only_when_the_conversation_ends_with_an_answer(tmp_path: Path) -> None:
    ends_with_user = [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "Bye"}]
    blank = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]
    [t1, t2], _ = ingest(write_lines(tmp_path / "log.jsonl", ends_with_user, blank))
    assert (t1.final_answer, t2.final_answer) == (None, None)
    assert t1.metadata["query_index"] == 1


def test_bad_lines_are_counted_with_their_line_number(tmp_path: Path) -> None:
    good = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = write_lines(
        tmp_path / "log.jsonl",
        good,
        "{not json",
        {"prompt": "no messages here"},
        [],
        ["a string, not a message"],
        [{"role": "robot", "content": "beep"}],
        [{"role": "system", "content": "only a system prompt"}],
        [{"role": "user", "content": 42}],
        [{"role": "assistant", "tool_calls": [{"id": "x", "function": {}}]}],
        "",
        good,
    )
    trajs, stats = ingest(path)
    assert len(trajs) == 2 and stats.built == 2
    assert dict(stats.skipped) == {
        "invalid JSON": 1,
        "not a conversation (no messages list)": 2,
        "not a conversation (a message is not an object)": 1,
        "unknown message role 'robot'": 1,
        "not a conversation (no user or assistant message)": 1,
        "bad message content (not null, a string or a list of parts)": 1,
        "tool call without a function name": 1,
    }
    assert stats.examples["invalid JSON"] == f"{path}:2"
    assert stats.examples["not a conversation (no messages list)"] == f"{path}:3"
    assert stats.read["lines"] == 10  # the blank line is not a record
    assert trajs[0].id == trajs[1].id  # the same line, the same id


def test_strict_stops_at_the_first_bad_line(tmp_path: Path) -> None:
    good = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    path = write_lines(tmp_path / "log.jsonl", good, "{not json", good)
    seen: list[Trajectory] = []
    with pytest.raises(
        UserError, match=r"log\.jsonl:2: invalid JSON; fix the input or drop --strict"
    ):
        seen.extend(read(path, IngestOptions(strict=True), IngestStats()))
    assert len(seen) == 1  # what came before the bad line was delivered


def test_dispatch_through_read_traces(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "log.jsonl", [{"role": "user", "content": "Hi"}])
    assert [t.messages[0].content for t in read_traces("chat-logs", path)] == ["Hi"]
    with pytest.raises(UserError, match="file not found"):
        read_traces("chat-logs", tmp_path / "missing.jsonl")


def test_reading_is_streamed(tmp_path: Path) -> None:
    """Memory stays flat as the file grows: records are never all held at once."""
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(8000):
            msgs = [{"role": "user", "content": f"q{i} " + "x" * 800},
                    {"role": "assistant", "content": "a" * 200}]  # fmt: skip
            f.write(json.dumps({"id": i, "messages": msgs}) + "\n")
    tracemalloc.start()
    count = sum(1 for _ in read(path, IngestOptions(), IngestStats()))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 8000
    assert peak < path.stat().st_size / 20  # ~8.8 MB file, well under 0.5 MB held
