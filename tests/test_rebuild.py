"""The one span -> trajectory rebuild, the repr parser and the message-shape conversions.

Spans here are `Span` objects holding attributes FLAT, as the OTel SDK exports them (JSON
strings, agentscope's reprs), made by tests/studio_db.py from scripted runs: the same runs the
Studio tests store in real SQLite files. Expected dialogues come from the scripts alone.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from studio_db import (
    TRICKY,
    Call,
    RawSpan,
    RunScript,
    Step,
    Turn,
    expected_dialogue,
    sample_run,
    spans_of,
)

from agentmill.errors import UserError
from agentmill.ingest import span_content as sc
from agentmill.ingest import span_messages as sm
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.pyrepr import ReprCall, parse_repr
from agentmill.ingest.rebuild import rebuild
from agentmill.ingest.spans import Span, SpanEvent
from agentmill.records import Message, Trajectory

STATUS = {0: "unset", 1: "ok", 2: "error"}


def as_span(raw: RawSpan, conversation: str | None = "run-1") -> Span:
    """A raw exported span as the OTel ingester hands it over: flat attributes, as sent."""
    kind = raw.attributes.get("span.kind")
    return Span(
        trace_id=raw.trace_id,
        span_id=raw.span_id,
        parent_id=raw.parent_id,
        name=raw.name,
        start_ns=raw.start_ns,
        end_ns=raw.end_ns,
        attributes=dict(raw.attributes),
        status=STATUS[raw.status],  # type: ignore[arg-type]
        status_message=raw.message,
        conversation_id=conversation,
        events=[SpanEvent(e["name"], e["time"], e["attributes"]) for e in raw.events],
        scope=raw.scope[0],
        kind_hint=json.loads(kind) if kind else None,
        origin={"file": "/traces/run.jsonl"},
    )


def run_rebuild(
    spans: list[Span], stats: IngestStats | None = None, **opts: Any
) -> list[Trajectory]:
    return list(rebuild(spans, stats or IngestStats(), IngestOptions(**opts), "test"))


def dialogue(t: Trajectory) -> list[dict[str, Any]]:
    return [m.to_dict() for m in t.messages]


def expected(run: RunScript, turn: int, system: bool = True) -> list[dict[str, Any]]:
    return [Message.model_validate(m).to_dict() for m in expected_dialogue(run, turn, system)]


# --- pyrepr ---------------------------------------------------------------------------------


def msg_repr(content: Any) -> str:
    """agentscope 1.x's Msg.__repr__ applied to `content` (via the real repr of the value)."""
    return (
        f"Msg(id='a1', name='user', content={content!r}, role='user', metadata=None, "
        f"timestamp='2025-11-20 10:00:00.123', invocation_id='None')"
    )


@pytest.mark.parametrize(
    "content",
    [
        TRICKY,
        "'); __import__('os').system('touch /tmp/pwned') #",
        "a'b\"c''' \"\"\" \\x00 \t\r\n end",
        [
            {"type": "text", "text": TRICKY},
            {"type": "tool_use", "id": "c", "name": "f", "input": {}},
        ],
    ],
)
def test_msg_repr_content_survives_exactly(content: Any) -> None:
    parsed = parse_repr(msg_repr(content))
    assert isinstance(parsed, ReprCall) and parsed.type_name == "Msg"
    assert parsed["content"] == content
    assert (parsed["role"], parsed["metadata"], parsed["invocation_id"]) == ("user", None, "None")


@dataclasses.dataclass
class ToolResponse:  # agentscope 1.x's dataclass: its repr is what the spans hold
    content: list
    metadata: dict | None = None
    stream: bool = False
    is_last: bool = True
    is_interrupted: bool = False
    id: str = "2025-11-20 10:00:00.123_ab12"


class State(StrEnum):
    SUCCESS = "success"


class Block(BaseModel):
    type: str = "text"
    text: str


class Response2(BaseModel):  # agentscope 2.x: pydantic repr, nested calls, an enum member
    content: list[Block]
    state: State = State.SUCCESS
    metadata: dict = {}


def test_tool_response_reprs_1x_and_2x() -> None:
    one = parse_repr(repr(ToolResponse([{"type": "text", "text": TRICKY}])))
    assert one.type_name == "ToolResponse" and one["content"] == [{"type": "text", "text": TRICKY}]
    assert one["is_last"] is True and one["metadata"] is None
    two = parse_repr(repr(Response2(content=[Block(text=TRICKY)])))
    assert two["state"] == "success"
    assert two["content"] == [{"type": "text", "text": TRICKY}]
    assert two["content"][0].type_name == "Block"


def test_nested_calls_lists_dicts_and_positional_args() -> None:
    value = parse_repr("[Msg(content=[A(x=1)], meta={'k': (1, 2)}), datetime.datetime(2025, 1, 2)]")
    assert value[0]["content"][0] == {"x": 1} and value[0]["meta"] == {"k": [1, 2]}
    assert value[1].type_name == "datetime.datetime" and value[1].args == (2025, 1, 2)


@pytest.mark.parametrize(
    "text",
    [
        "Msg(id='a1', content='unterminated)",
        "Msg(id='x' + 'y')",  # an expression, not a literal
        "__import__('os').system('touch /tmp/x')",  # a call of a call: not a repr
        "Msg(**{'a': 1})",
        "lambda: 1",
        "",
    ],
)
def test_unparseable_reprs_give_none_and_run_nothing(text: str, tmp_path: Path) -> None:
    assert parse_repr(text.replace("/tmp/x", str(tmp_path / "x"))) is None
    assert not (tmp_path / "x").exists()


# --- message shapes -------------------------------------------------------------------------


def test_agentscope_2x_turn_in_one_assistant_message_is_split_per_step() -> None:
    block = "TextBlock(type='text', text='391', id='b1', created_at='t', finished_at=None)"
    parts = [
        {"type": "text", "content": "Let me compute that."},
        {"type": "tool_call", "id": "c1", "name": "multiply", "arguments": {"a": 17}},
        {"type": "tool_call_response", "id": "c1", "response": json.dumps([block])},
        {"type": "text", "content": "The answer is 391."},
    ]
    got = sm.from_any([{"role": "assistant", "parts": parts}, {"role": "assistant", "parts": []}])
    assert got == [
        {
            "role": "assistant",
            "content": "Let me compute that.",
            "tool_calls": [sm.tool_call("c1", "multiply", {"a": 17})],
        },
        {"role": "tool", "content": "391", "tool_call_id": "c1"},
        {"role": "assistant", "content": "The answer is 391."},
    ]


def test_provider_shapes_openai_dashscope_anthropic() -> None:
    got = sm.from_any(
        [
            {"role": "system", "content": [{"text": "sys"}]},  # DashScope
            {
                "role": "user",
                "name": "Bob",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "c",
                        "content": [{"type": "text", "text": "ok"}],
                    }
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm"},
                    {"type": "text", "text": "done"},
                ],
            },
        ]
    )
    assert got == [
        {"role": "system", "content": "sys"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            "name": "Bob",
        },
        {"role": "assistant", "content": None, "tool_calls": [sm.tool_call("c", "f", {"x": 1})]},
        {"role": "tool", "content": "ok", "tool_call_id": "c"},
        {"role": "assistant", "content": "done", "reasoning": "hm"},
    ]
    assert sm.tool_call("c", "f", "not json")["function"] == {
        "name": "f",
        "raw_arguments": "not json",
    }


def test_tool_definitions_flat_and_nested_normalize_alike() -> None:
    params = {"type": "object", "properties": {"q": {"type": "string"}}}
    flat = [{"type": "function", "name": "search", "description": "Search.", "parameters": params}]
    nested = [
        {
            "type": "function",
            "function": {"name": "search", "description": "Search.", "parameters": params},
        }
    ]
    want = [
        {
            "type": "function",
            "function": {"name": "search", "description": "Search.", "parameters": params},
        }
    ]
    assert sc.tool_definitions(flat) == sc.tool_definitions(nested) == want


# --- rebuild from flat spans (the OTLP form) -------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "version", "system"),
    [
        ("old", "", True),
        ("genai", "1.0.9", True),
        ("genai", "1.0.12", True),
        ("as2", "2.0.4", False),
        ("as2", "2.0.8", True),
        ("as2", "2.0.11", True),
    ],
)
def test_flat_spans_rebuild_message_by_message(protocol: str, version: str, system: bool) -> None:
    run = sample_run()
    stats = IngestStats()
    got = run_rebuild([as_span(s) for s in spans_of(run, protocol, version)], stats)
    assert [dialogue(t) for t in got] == [expected(run, 0, system), expected(run, 1, system)]
    assert [t.final_answer for t in got] == [
        run.turns[0].steps[-1].text,
        run.turns[1].steps[-1].text,
    ]
    assert [t.usage.prompt_tokens for t in got] == [120 + 200 + 260, 300]
    assert got[0].agent.tool_errors == 1 and got[0].agent.by_tool == {"calc": 1, "search": 2}
    assert got[0].agent.steps == 3 and got[0].agent.tool_calls == 3
    assert stats.built == 2 and not stats.skipped
    check = "agree" if system else "no_prompt"
    assert [t.metadata["prompt_check"] for t in got] == [check, check]


def test_ids_are_stable_and_file_independent() -> None:
    raw = spans_of(sample_run(), "genai")
    first = run_rebuild([as_span(s) for s in raw])
    moved = []
    for s in raw:
        span = as_span(s)
        span.origin = {"file": "/elsewhere/copy.jsonl"}
        moved.append(span)
    again = run_rebuild(list(reversed(moved)))  # input order does not matter either
    assert [t.id for t in first] == [t.id for t in again]
    assert [t.task_id for t in first] == [t.task_id for t in again]
    assert first[0].task_id != first[1].task_id
    assert [t.to_dict() | {"provenance": None} for t in first] == [
        t.to_dict() | {"provenance": None} for t in again
    ]


def test_task_id_hashes_the_dialogue_before_the_answer() -> None:
    run = sample_run()
    same_question = RunScript("run-2", [Turn(run.turns[0].user, [Step("Other words.")])])
    a = run_rebuild([as_span(s) for s in spans_of(run, "genai")])[0]
    b = run_rebuild([as_span(s, "run-2") for s in spans_of(same_question, "genai")])[0]
    assert a.task_id == b.task_id and a.id != b.id


def test_missing_parent_becomes_a_counted_root() -> None:
    run = sample_run(orphan_turn=1)
    stats = IngestStats()
    got = run_rebuild([as_span(s) for s in spans_of(run, "genai")], stats)
    assert [dialogue(t) for t in got] == [expected(run, 0), expected(run, 1)]
    assert stats.read["missing_parent"] == 1
    assert (
        got[1].provenance.extra["missing_parent"]
        and "missing_parent" not in got[0].provenance.extra
    )


def test_equal_rounded_times_keep_parents_before_children() -> None:
    spans = [as_span(s) for s in spans_of(sample_run(), "genai")]
    for s in spans:  # a coarse clock: every span of a trace starts at the same instant
        s.start_ns = 1_700_000_000_000_000_000
    got = run_rebuild(list(reversed(spans)))
    assert [len(t.messages) for t in got] == [8, 10]
    assert [dialogue(t) for t in got] == [expected(sample_run(), 0), expected(sample_run(), 1)]


def test_nested_agent_steps_stay_with_the_nested_agent() -> None:
    run = RunScript(
        "run-1",
        [
            Turn(
                "Ask the expert.",
                [Step("Asking.", [Call("expert", {"q": "x"}, "42")]), Step("It is 42.")],
            )
        ],
    )
    spans = [as_span(s) for s in spans_of(run, "genai")]
    tool = next(s for s in spans if s.name == "execute_tool expert")
    inner = RunScript(
        "run-1", [Turn("x", [Step("Inner thinking, not the outer agent's step.")])], agent="Expert"
    )
    nested = [as_span(s) for s in spans_of(inner, "genai", seed=1)]
    nested[0].parent_id, nested[0].trace_id = tool.span_id, tool.trace_id
    for s in nested[1:]:
        s.trace_id = tool.trace_id
    stats = IngestStats()
    [got] = run_rebuild(spans + nested, stats)
    assert dialogue(got) == expected(run, 0)
    assert got.agent.steps == 2 and stats.read["spans_outside_turns"] == 0


def test_agent_failure_and_tool_error() -> None:
    run = RunScript(
        "run-1",
        [
            Turn(
                "Go.",
                [Step("Trying.", [Call("search", {"query": "q"}, "", error="HTTP 503")]), Step("")],
                failed="model overloaded",
            )
        ],
    )
    [got] = run_rebuild([as_span(s) for s in spans_of(run, "genai")])
    assert got.status == "failed" and got.stop_reason == "error" and got.final_answer is None
    assert got.metadata["error"] == "model overloaded"
    assert dialogue(got)[-1] == {
        "role": "tool",
        "content": "HTTP 503",
        "tool_call_id": "call_run-1_0_0_0",
    }
    assert got.agent.tool_errors == 1


def test_no_user_input_is_a_counted_skip() -> None:
    spans = [as_span(s) for s in spans_of(sample_run(), "as2", "2.0.4")]
    for s in spans:
        s.attributes.pop("gen_ai.input.messages", None)
    stats = IngestStats()
    assert run_rebuild(spans, stats) == []
    assert stats.skipped["no_user_input"] == 2 and stats.read["missing_inputs"] == 4


def test_unparseable_repr_is_a_counted_skip_or_strict_error() -> None:
    spans = [as_span(s) for s in spans_of(sample_run(), "old")]
    agent = next(s for s in spans if s.name == "ReActAgent.reply")
    agent.attributes["input"] = json.dumps({"args": ["Msg(id='u0', content='broken"], "kwargs": {}})
    for s in spans:  # without prompts the turn needs the agent's own input
        if s.name.endswith("__call__"):
            s.attributes.pop("input")
    stats = IngestStats()
    got = run_rebuild(spans, stats)
    assert len(got) == 1 and stats.skipped["unparseable_repr"] == 1
    with pytest.raises(UserError, match="unparseable_repr"):
        run_rebuild(spans, strict=True)


def test_prompt_that_does_not_repeat_the_steps_is_kept_as_is() -> None:
    spans = [as_span(s) for s in spans_of(sample_run(), "genai")]
    chats = [s for s in spans if s.name.startswith("chat")]
    last = chats[2]  # turn 0's last call: its prompt loses the first tool result
    fn = json.loads(last.attributes["agentscope.function.input"])
    fn["args"][0] = [m for m in fn["args"][0] if m.get("tool_call_id") != "call_run-1_0_0_0"]
    last.attributes["agentscope.function.input"] = json.dumps(fn)
    stats = IngestStats()
    got = run_rebuild(spans, stats)
    assert got[0].metadata["prompt_check"] == "mismatch" and stats.read["prompt_mismatch"] == 1
    assert "call_run-1_0_0_0" not in [m.tool_call_id for m in got[0].messages]
    assert got[0].messages[0].role == "system" and got[0].final_answer


def test_time_window_selects_turns() -> None:
    spans = [as_span(s) for s in spans_of(sample_run(), "genai")]
    second = sorted(s.start_ns for s in spans if s.name.startswith("invoke_agent"))[1]
    at = datetime.fromtimestamp(second / 1e9) - timedelta(microseconds=1)
    stats = IngestStats()
    got = run_rebuild(spans, stats, since=at.astimezone())
    assert [t.provenance.extra["turn"] for t in got] == [1]
    assert stats.read["turns_outside_window"] == 1
    assert dialogue(got[0]) == expected(sample_run(), 1)  # the context still has turn 0
    assert [t.provenance.extra["turn"] for t in run_rebuild(spans, until=at.astimezone())] == [0]


# --- other attribute styles: events, flattened prompts, legacy keys ---------------------------


def _chat_span(attributes: dict[str, Any], events: list[SpanEvent] | None = None) -> list[Span]:
    agent = Span(
        "t",
        "a",
        None,
        "invoke_agent Bot",
        1,
        10,
        {"gen_ai.operation.name": "invoke_agent"},
        "ok",
        conversation_id="c1",
    )
    chat = Span(
        "t",
        "b",
        "a",
        "chat m",
        2,
        9,
        {"gen_ai.operation.name": "chat", **attributes},
        "ok",
        conversation_id="c1",
        events=events or [],
    )
    return [agent, chat]


WANT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi?"},
    {
        "role": "assistant",
        "content": "Hello!",
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    },
]


def test_prompt_and_completion_in_span_events_with_legacy_usage_keys() -> None:
    events = [
        SpanEvent(
            "gen_ai.system.message", 3, {"gen_ai.system": "openai"}, {"content": "Be brief."}
        ),
        SpanEvent("gen_ai.user.message", 4, {}, {"content": "Hi?"}),
        SpanEvent(
            "gen_ai.choice",
            8,
            {},
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello!"},
            },
        ),
    ]
    legacy = {
        "gen_ai.usage.prompt_tokens": 7,
        "gen_ai.usage.completion_tokens": 2,
        "gen_ai.system": "openai",
    }
    [got] = run_rebuild(_chat_span(legacy, events))
    assert dialogue(got) == WANT and got.final_answer == "Hello!"


def test_operation_details_event_and_flattened_prompt_attributes() -> None:
    details = SpanEvent(
        "gen_ai.client.inference.operation.details",
        3,
        {
            "gen_ai.system_instructions": json.dumps([{"type": "text", "content": "Be brief."}]),
            "gen_ai.input.messages": json.dumps(
                [{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}]
            ),
            "gen_ai.output.messages": json.dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [{"type": "text", "content": "Hello!"}],
                        "finish_reason": "stop",
                    }
                ]
            ),
        },
    )
    usage = {"gen_ai.usage.input_tokens": 7, "gen_ai.usage.output_tokens": 2}
    [got] = run_rebuild(_chat_span(usage, [details]))
    assert dialogue(got) == WANT
    flattened = {
        **usage,
        "gen_ai.prompt.0.role": "system",
        "gen_ai.prompt.0.content": "Be brief.",
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "Hi?",
        "gen_ai.completion.0.role": "assistant",
        "gen_ai.completion.0.content": "Hello!",
    }
    [got] = run_rebuild(_chat_span(flattened))
    assert dialogue(got) == WANT


def test_chat_span_without_any_captured_input_is_counted_not_guessed() -> None:
    spans = _chat_span(
        {
            "gen_ai.output.messages": json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "Hello!"}]}]
            )
        }
    )
    spans[0].attributes["gen_ai.input.messages"] = json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "Hi?"}]}]
    )
    stats = IngestStats()
    [got] = run_rebuild(spans, stats)
    assert stats.read["missing_inputs"] == 1 and got.metadata["prompt_check"] == "no_prompt"
    assert dialogue(got) == [
        {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello!"},
    ]


def test_conversation_without_agent_spans_is_a_counted_skip() -> None:
    stats = IngestStats()
    assert run_rebuild(_chat_span({})[1:], stats) == []
    assert stats.skipped["no_agent_turns"] == 1 and stats.read["spans_outside_turns"] == 1


def test_numeric_call_ids_become_text_on_both_sides() -> None:
    """A provider that numbers its calls: the call and its result keep one id, as text (a
    number there used to fail the record's validation and stop the ingest)."""
    got = sm.from_any(
        [
            {"role": "assistant", "tool_calls": [{"id": 7, "function": {"name": "f"}}]},
            {"role": "tool", "tool_call_id": 7, "content": "ok"},
            {"role": "user", "parts": [{"type": "tool_call_response", "id": 8, "response": "r"}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": 9, "content": "x"}],
            },
        ]
    )
    assert got[0]["tool_calls"][0]["id"] == "7" and got[1]["tool_call_id"] == "7"
    assert [m.get("tool_call_id") for m in got[2:]] == ["8", "9"]
    Trajectory.model_validate({"id": "t", "task_id": "k", "messages": got})
