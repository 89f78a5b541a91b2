"""The OpenTelemetry GenAI ingester: OTLP/JSON traces (+ logs) -> normalized spans -> trajectories.

Spans and log records come from the REAL opentelemetry-sdk (TracerProvider / LoggerProvider
with the OTLP/JSON exporters in tests/otlp_export.py); the agentscope fixtures are real
agentscope exports captured by scripts/fixtures/gen_agentscope_otlp.py. Each test builds a
two-turn tool-using agent run (`emit_run`) in one of the shapes real instrumentations write.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from otlp_export import OtlpCapture, b64_ids, int_numbers, snake_case, variant

from agentmill.errors import UserError
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.otel import read, read_spans
from agentmill.ingest.spans import Span
from agentmill.records import Trajectory

FIXTURES = Path(__file__).parent / "fixtures" / "otel"
SYSTEM = "You are a careful calculator."
TOOL = {
    "type": "function",
    "name": "multiply",
    "description": "Multiply two integers.",
    "parameters": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
}
# (question, arguments, tool result, final answer) per user turn
TURNS = [
    ("What is 17 times 23?", {"a": 17, "b": 23}, "391", "The answer is 391."),
    ("And 12 times 12?", {"a": 12, "b": 12}, "144", "The answer is 144."),
]
SHAPES = ["semconv", "legacy", "flattened", "logs", "span_events", "details"]


# --- one agent run, in OpenAI-style messages ------------------------------------------------


def chat_calls() -> list[tuple[list[dict], dict, str]]:
    """(prompt, completion, finish reason) of each model call of the run, in order."""
    history: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    calls = []
    for t, (question, args, result, answer) in enumerate(TURNS):
        history.append({"role": "user", "content": question})
        call = {"id": f"call_{t}", "type": "function"}
        call["function"] = {"name": "multiply", "arguments": json.dumps(args)}
        asked = {"role": "assistant", "content": "Let me compute.", "tool_calls": [call]}
        calls.append((list(history), asked, "tool_call"))
        history += [asked, {"role": "tool", "tool_call_id": f"call_{t}", "content": result}]
        final = {"role": "assistant", "content": answer}
        calls.append((list(history), final, "stop"))
        history.append(final)
    return calls


def parts(message: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style message in the GenAI semconv parts form."""
    if message["role"] == "tool":
        response = {"type": "tool_call_response", "id": message["tool_call_id"]}
        return {"role": "tool", "parts": [{**response, "response": message["content"]}]}
    out = [{"type": "text", "content": message["content"]}] if message.get("content") else []
    for c in message.get("tool_calls", []):
        fn = c["function"]
        out.append(
            {
                "type": "tool_call",
                "id": c["id"],
                "name": fn["name"],
                "arguments": json.loads(fn["arguments"]),
            }
        )
    return {"role": message["role"], "parts": out}


def output_parts(message: dict[str, Any], finish: str) -> list[dict[str, Any]]:
    return [{**parts(message), "finish_reason": finish}]


# --- emitting it through the real SDK in each shape ---------------------------------------


def chat_attributes(
    shape: str, prompt: list[dict], completion: dict, finish: str
) -> dict[str, Any]:
    base = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-test"}
    if shape == "flattened":  # OpenLLMetry: no operation name, everything flattened
        return {
            "llm.request.type": "chat",
            "gen_ai.system": "openai",
            **flatten(prompt, completion, finish),
        }
    if shape == "legacy":
        usage = {
            "gen_ai.system": "openai",
            "gen_ai.usage.prompt_tokens": 10 * len(prompt),
            "gen_ai.usage.completion_tokens": 7,
        }
    else:
        usage = {
            "gen_ai.provider.name": "openai",
            "gen_ai.usage.input_tokens": 10 * len(prompt),
            "gen_ai.usage.output_tokens": 7,
        }
    out = {**base, **usage, "gen_ai.response.finish_reasons": (finish,)}
    if shape in ("semconv", "legacy"):
        out["gen_ai.input.messages"] = json.dumps([parts(m) for m in prompt])
        out["gen_ai.output.messages"] = json.dumps(output_parts(completion, finish))
        out["gen_ai.tool.definitions"] = json.dumps([TOOL])
    return out


def flatten(prompt: list[dict], completion: dict, finish: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for prefix, messages in (("gen_ai.prompt", prompt), ("gen_ai.completion", [completion])):
        for i, m in enumerate(messages):
            out[f"{prefix}.{i}.role"] = m["role"]
            if m.get("content") is not None:
                out[f"{prefix}.{i}.content"] = m["content"]
            if m.get("tool_call_id"):
                out[f"{prefix}.{i}.tool_call_id"] = m["tool_call_id"]
            for j, c in enumerate(m.get("tool_calls", [])):
                out[f"{prefix}.{i}.tool_calls.{j}.id"] = c["id"]
                out[f"{prefix}.{i}.tool_calls.{j}.name"] = c["function"]["name"]
                out[f"{prefix}.{i}.tool_calls.{j}.arguments"] = c["function"]["arguments"]
    out["gen_ai.completion.0.finish_reason"] = finish
    fn = {k: TOOL[k] for k in ("name", "description")}
    out.update({f"llm.request.functions.0.{k}": v for k, v in fn.items()})
    out["llm.request.functions.0.parameters"] = json.dumps(TOOL["parameters"])
    return out


def events(prompt: list[dict], completion: dict, finish: str) -> list[tuple[str, dict]]:
    """The deprecated event-based shape: one event per prompt message, then the choice."""
    out = []
    for m in prompt:
        body = {k: v for k, v in m.items() if k not in ("role", "tool_call_id")}
        if m["role"] == "tool":
            body["id"] = m["tool_call_id"]
        out.append((f"gen_ai.{m['role']}.message", body))
    message = {k: v for k, v in completion.items() if k != "role"}
    out.append(("gen_ai.choice", {"index": 0, "finish_reason": finish, "message": message}))
    return out


def emit_chat(
    cap: OtlpCapture, shape: str, prompt: list[dict], completion: dict, finish: str
) -> None:
    name = "openai.chat" if shape == "flattened" else "chat gpt-test"
    with cap.tracer.start_as_current_span(
        name, attributes=chat_attributes(shape, prompt, completion, finish)
    ) as span:
        if shape == "logs":
            for event_name, body in events(prompt, completion, finish):
                cap.logger.emit(
                    event_name=event_name, body=body, attributes={"gen_ai.system": "openai"}
                )
        elif shape == "span_events":  # as the Azure AI SDKs write them
            for event_name, body in events(prompt, completion, finish):
                span.add_event(event_name, {"gen_ai.event.content": json.dumps(body)})
        elif shape == "details":
            attrs = {
                "gen_ai.input.messages": json.dumps([parts(m) for m in prompt]),
                "gen_ai.output.messages": json.dumps(output_parts(completion, finish)),
                "gen_ai.tool.definitions": json.dumps([TOOL]),
            }
            cap.logger.emit(
                event_name="gen_ai.client.inference.operation.details", attributes=attrs
            )


def emit_run(cap: OtlpCapture, shape: str = "semconv", conversation: str | None = "conv-1") -> None:
    """Two user turns of a tool-using agent; each turn is its own trace (as in agentscope)."""
    calls = iter(chat_calls())
    for t, (question, args, result, answer) in enumerate(TURNS):
        agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "Friday"}
        if conversation is not None:
            agent["gen_ai.conversation.id"] = conversation
        agent["gen_ai.input.messages"] = json.dumps([parts({"role": "user", "content": question})])
        agent["gen_ai.output.messages"] = json.dumps(
            output_parts({"role": "assistant", "content": answer}, "stop")
        )
        with cap.tracer.start_as_current_span("invoke_agent Friday", attributes=agent):
            emit_chat(cap, shape, *next(calls))
            tool = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "multiply"}
            tool.update(
                {"gen_ai.tool.call.id": f"call_{t}", "gen_ai.tool.call.arguments": json.dumps(args)}
            )
            with cap.tracer.start_as_current_span(
                "execute_tool multiply", attributes={**tool, "gen_ai.tool.call.result": result}
            ):
                pass
            emit_chat(cap, shape, *next(calls))


def capture_run(tmp_path: Path, shape: str, batch: bool = False, **kw: Any) -> tuple[Path, Path]:
    traces, logs = tmp_path / f"{shape}.traces.jsonl", tmp_path / f"{shape}.logs.jsonl"
    cap = OtlpCapture(traces, logs, batch=batch)
    emit_run(cap, shape, **kw)
    cap.flush()
    return traces, logs


def conversations(path: Path, stats: IngestStats | None = None, **opts: Any) -> list[list[Span]]:
    return list(
        read_spans(path, IngestOptions(**opts), stats if stats is not None else IngestStats())
    )


def chats(spans: list[Span]) -> list[Span]:
    return [s for s in spans if s.get("gen_ai.operation.name") == "chat"]


# --- decoding and grouping ----------------------------------------------------------------


def test_sdk_spans_spread_over_lines_are_one_conversation_in_order(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", batch=False)
    assert len(traces.read_text().splitlines()) == 8  # one span per export request
    stats = IngestStats()
    [spans] = conversations(traces, stats)
    assert [s.name for s in spans] == [
        "invoke_agent Friday",
        "chat gpt-test",
        "execute_tool multiply",
        "chat gpt-test",
    ] * 2
    assert {s.conversation_id for s in spans} == {"conv-1"}
    roots = [s for s in spans if s.parent_id is None]
    assert [r.name for r in roots] == ["invoke_agent Friday"] * 2
    by_id = {s.span_id: s for s in spans}
    assert all(by_id[s.parent_id].trace_id == s.trace_id for s in spans if s.parent_id)
    assert all(len(s.trace_id) == 32 and len(s.span_id) == 16 for s in spans)
    assert spans[1].get("gen_ai.usage.input_tokens") == 20 and spans[1].scope == "app"
    assert spans[1].get("gen_ai.response.finish_reasons") == ["tool_call"]
    assert spans[0].origin["service"] == "otel-test-app" and spans[0].origin["line"] >= 1
    assert (
        stats.read["spans"] == 8 and stats.read["traces"] == 2 and stats.read["conversations"] == 1
    )


def test_other_writers_spellings_read_the_same(tmp_path: Path) -> None:
    """snake_case field names, base64 ids (protobuf json_format), integers as numbers, and
    one whole pretty-printed document all give the same spans as the collector's form."""
    traces, _ = capture_run(tmp_path, "semconv", batch=True)
    expected = _comparable(conversations(traces))
    other = variant(traces, tmp_path / "other.jsonl", int_numbers, b64_ids, snake_case)
    assert "resource_spans" in other.read_text() and "startTimeUnixNano" not in other.read_text()
    assert _comparable(conversations(other)) == expected
    docs = [json.loads(line) for line in traces.read_text().splitlines()]
    whole = tmp_path / "whole.json"
    whole.write_text(
        json.dumps({"resourceSpans": [rs for d in docs for rs in d["resourceSpans"]]}, indent=2)
    )
    assert _comparable(conversations(whole)) == expected


def _comparable(convs: list[list[Span]]) -> list[list[tuple]]:
    return [
        [(s.trace_id, s.span_id, s.parent_id, s.name, s.start_ns, s.attributes) for s in c]
        for c in convs
    ]


def test_status_codes_and_values_decode() -> None:
    from agentmill.ingest import otlp

    assert otlp.status_of({"status": {"code": "STATUS_CODE_ERROR", "message": "boom"}}) == (
        "error",
        "boom",
    )
    assert otlp.status_of({"status": {"code": 2}}) == ("error", "")
    assert otlp.status_of({}) == ("unset", "")
    value = {
        "arrayValue": {"values": [{"intValue": "7"}, {"doubleValue": 0.5}, {"boolValue": True}, {}]}
    }
    assert otlp.decode_any(value) == [7, 0.5, True, None]
    assert otlp.decode_any({"bytes_value": "AAE="}) == "AAE="
    with pytest.raises(ValueError, match="hex digits or base64"):
        otlp.hex_id("xyz", 8)


def test_doctests() -> None:
    import doctest

    from agentmill.ingest import otel, otlp

    for mod in (otel, otlp):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


# --- conversation ids ---------------------------------------------------------------------


def test_conversation_from_quoted_id_run_id_trace_or_trace_id(tmp_path: Path) -> None:
    cap = OtlpCapture(tmp_path / "t.jsonl", batch=True)
    named = cap.tracer.start_as_current_span("a", attributes={"gen_ai.conversation.id": '"run-9"'})
    with named, cap.tracer.start_as_current_span("child without id"):
        pass
    with cap.tracer.start_as_current_span("old", attributes={"project.run_id": '"run-old"'}):
        pass
    for name in ("lonely 1", "lonely 2"):  # agentscope 2.x without a session
        with cap.tracer.start_as_current_span(
            name, attributes={"gen_ai.conversation.id": "[no_session_id]"}
        ):
            pass
    cap.flush()
    convs = conversations(tmp_path / "t.jsonl")
    got = {tuple(s.name for s in c): c[0].conversation_id for c in convs}
    assert got[("a", "child without id")] == "run-9"
    assert got[("old",)] == "run-old"
    lonely = [c for c in convs if c[0].name.startswith("lonely")]
    assert len(lonely) == 2 and lonely[0][0].conversation_id == lonely[0][0].trace_id
    only = conversations(tmp_path / "t.jsonl", runs=["run-old"])
    assert [[s.name for s in c] for c in only] == [["old"]]


# --- every shape normalizes to the standard attributes ------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_normalizes_to_parts_form(tmp_path: Path, shape: str) -> None:
    traces, logs = capture_run(tmp_path, shape)
    stats = IngestStats()
    [spans] = conversations(traces, stats, logs=logs if logs.exists() else None)
    got = chats(spans)
    assert len(got) == 4
    for span, (prompt, completion, finish) in zip(got, chat_calls(), strict=True):
        assert span.get("gen_ai.input.messages") == [parts(m) for m in prompt]
        assert span.get("gen_ai.output.messages") == output_parts(completion, finish)
        assert span.get("gen_ai.provider.name") == "openai"
        if shape != "logs" and shape != "span_events":
            assert span.get("gen_ai.tool.definitions") == [TOOL]
    if shape in ("semconv", "legacy"):
        assert [s.get("gen_ai.usage.input_tokens") for s in got] == [20, 40, 60, 80]
        assert [s.get("gen_ai.usage.output_tokens") for s in got] == [7] * 4
    if shape in ("logs", "details"):
        assert stats.read["log_records_joined"] == stats.read["log_records"] > 0
        assert stats.skipped["log_without_span"] == 0


def test_logs_that_match_no_span_are_counted(tmp_path: Path) -> None:
    traces, logs = capture_run(tmp_path, "logs")
    cap = OtlpCapture(tmp_path / "unused.jsonl", tmp_path / "more.logs.jsonl")
    cap.logger.emit(event_name="gen_ai.user.message", body={"content": "outside any span"})
    with cap.tracer.start_as_current_span("a span that was never exported to traces"):
        cap.logger.emit(event_name="gen_ai.user.message", body={"content": "orphan"})
    cap.flush()
    merged = tmp_path / "merged.logs.jsonl"
    merged.write_text(logs.read_text() + (tmp_path / "more.logs.jsonl").read_text())
    stats = IngestStats()
    [spans] = conversations(traces, stats, logs=merged)
    assert stats.skipped["log_without_span"] == 2
    assert stats.read["log_records_joined"] == stats.read["log_records"] - 2
    first = chats(spans)[0]
    assert [e.name for e in first.events] == [
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.choice",
    ]
    assert first.events[1].body == {"content": "What is 17 times 23?"}


def test_content_not_captured_gives_no_input_messages(tmp_path: Path) -> None:
    """Instrumentations with content capture off emit the events without bodies' content:
    that is no input at all, never an empty prompt."""
    cap = OtlpCapture(tmp_path / "t.jsonl", tmp_path / "l.jsonl")
    with cap.tracer.start_as_current_span(
        "chat m", attributes={"gen_ai.operation.name": "chat"}
    ) as span:
        cap.logger.emit(event_name="gen_ai.user.message", body={})
        span.add_event("gen_ai.system.message", {"gen_ai.system": "openai"})
        cap.logger.emit(
            event_name="gen_ai.choice", body={"index": 0, "finish_reason": "stop", "message": {}}
        )
    cap.flush()
    [[chat]] = conversations(tmp_path / "t.jsonl", logs=tmp_path / "l.jsonl")
    assert chat.get("gen_ai.input.messages") is None and chat.get("gen_ai.output.messages") is None
    assert chat.events == [] and chat.origin["events_without_content"] == 3


def test_standard_attributes_win_over_events_and_legacy_keys(tmp_path: Path) -> None:
    cap = OtlpCapture(tmp_path / "t.jsonl", tmp_path / "l.jsonl")
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": json.dumps([parts({"role": "user", "content": "standard"})]),
        "gen_ai.usage.input_tokens": 3,
        "gen_ai.usage.prompt_tokens": 99,
    }
    with cap.tracer.start_as_current_span("chat m", attributes=attrs):
        cap.logger.emit(event_name="gen_ai.user.message", body={"content": "from an event"})
    cap.flush()
    [[chat]] = conversations(tmp_path / "t.jsonl", logs=tmp_path / "l.jsonl")
    assert chat.get("gen_ai.input.messages") == [parts({"role": "user", "content": "standard"})]
    assert chat.get("gen_ai.usage.input_tokens") == 3


def test_openllmetry_list_content_and_json_looking_text(tmp_path: Path) -> None:
    cap = OtlpCapture(tmp_path / "t.jsonl")
    attrs = {
        "gen_ai.prompt.0.role": "user",
        "gen_ai.prompt.0.content": json.dumps(
            [{"type": "text", "text": "describe"}, {"type": "image_url", "image_url": {"url": "u"}}]
        ),
        "gen_ai.prompt.1.role": "user",
        "gen_ai.prompt.1.content": "[1, 2, 3]",
    }
    with cap.tracer.start_as_current_span("openai.chat", attributes=attrs):
        pass
    cap.flush()
    [[chat]] = conversations(tmp_path / "t.jsonl")
    first, second = chat.get("gen_ai.input.messages")
    assert first["parts"] == [
        {"type": "text", "content": "describe"},
        {"type": "image_url", "image_url": {"url": "u"}},
    ]
    assert second["parts"] == [{"type": "text", "content": "[1, 2, 3]"}]
    assert chat.get("gen_ai.operation.name") == "chat"


# --- end to end: through the one rebuild to trajectories ----------------------------------


def trajectories(path: Path, stats: IngestStats | None = None, **opts: Any) -> list[Trajectory]:
    return list(read(path, IngestOptions(**opts), stats if stats is not None else IngestStats()))


def expected_dialogue(turn: int) -> list[dict[str, Any]]:
    """The canonical messages of user turn `turn` (earlier turns as context), usage aside."""
    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for t, (question, args, result, answer) in enumerate(TURNS[: turn + 1]):
        call = {
            "id": f"call_{t}",
            "type": "function",
            "function": {"name": "multiply", "arguments": args},
        }
        out += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Let me compute.", "tool_calls": [call]},
            {"role": "tool", "content": result, "tool_call_id": f"call_{t}"},
            {"role": "assistant", "content": answer},
        ]
    return out


def _without_usage(messages: list[Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.to_dict().items() if k != "usage"} for m in messages]


def test_sdk_agent_run_rebuilds_message_by_message(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", batch=False)
    stats = IngestStats()
    first, second = trajectories(traces, stats)
    for turn, traj in enumerate((first, second)):
        assert _without_usage(traj.messages) == expected_dialogue(turn)
        assert traj.final_answer == TURNS[turn][3]
        assert traj.tools == [
            {
                "type": "function",
                "function": {k: TOOL[k] for k in ("name", "description", "parameters")},
            }
        ]
        assert traj.agent.tool_calls == 1 and traj.agent.steps == 2
        assert traj.provenance.source == "otel" and traj.provenance.source_id == "conv-1"
        assert traj.provenance.file == str(traces) and traj.metadata["prompt_check"] == "agree"
    # usage per step on this turn's own model calls; the context (turn 1) carries none
    assert [m.usage.prompt_tokens for m in first.messages if m.usage] == [20, 40]
    assert [m.usage for m in second.messages[:5] if m.usage] == []
    assert (second.usage.prompt_tokens, second.usage.completion_tokens) == (60 + 80, 14)
    assert stats.built == 2 and stats.read["missing_inputs"] == 0 and not stats.skipped


@pytest.mark.parametrize("shape", [s for s in SHAPES if s != "semconv"])
def test_each_shape_rebuilds_the_same_dialogue(tmp_path: Path, shape: str) -> None:
    traces, logs = capture_run(tmp_path, shape)
    stats = IngestStats()
    got = trajectories(traces, stats, logs=logs if logs.exists() else None)
    assert [_without_usage(t.messages) for t in got] == [expected_dialogue(0), expected_dialogue(1)]
    assert stats.read["missing_inputs"] == 0 and stats.built == 2
    if shape != "flattened":  # OpenLLMetry spans here carry no token counts
        assert [t.usage.prompt_tokens for t in got] == [60, 140]


def test_chat_spans_without_captured_input_are_counted_never_guessed(tmp_path: Path) -> None:
    """Content capture off: chat spans carry usage but no messages, in attributes or events."""
    cap = OtlpCapture(tmp_path / "t.jsonl", tmp_path / "l.jsonl")
    agent = {"gen_ai.operation.name": "invoke_agent", "gen_ai.conversation.id": "c"}
    agent["gen_ai.input.messages"] = json.dumps(
        [parts({"role": "user", "content": "What is 17 times 23?"})]
    )
    with cap.tracer.start_as_current_span("invoke_agent Friday", attributes=agent):
        for _ in range(2):
            with cap.tracer.start_as_current_span(
                "chat m",
                attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5},
            ):
                cap.logger.emit(event_name="gen_ai.user.message", body={})
    cap.flush()
    stats = IngestStats()
    [traj] = trajectories(tmp_path / "t.jsonl", stats, logs=tmp_path / "l.jsonl")
    assert stats.read["missing_inputs"] == 2
    assert traj.metadata["prompt_check"] == "no_prompt"
    assert [m.to_dict() for m in traj.messages] == [
        {"role": "user", "content": "What is 17 times 23?"}
    ]


def test_runs_option_selects_conversations(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", conversation="wanted")
    other = tmp_path / "other.traces.jsonl"
    cap = OtlpCapture(other)
    emit_run(cap, "semconv", conversation="unwanted")
    cap.flush()
    both = tmp_path / "both.jsonl"
    both.write_text(traces.read_text() + other.read_text())
    assert len(trajectories(both)) == 4
    got = trajectories(both, runs=["wanted"])
    assert [t.provenance.source_id for t in got] == ["wanted", "wanted"]


# --- real agentscope exports (scripts/fixtures/gen_agentscope_otlp.py) ---------------------

AGENTSCOPE_TURNS = [
    ("What is 17 times 23?", {"a": 17, "b": 23}, "391", "The answer is 391."),
    ("And 12 times 12?", {"a": 12, "b": 12}, "144", "The answer is 144."),
]


def agentscope_turn(
    turn: int, call_ids: tuple[str, ...] = ("call_1", "call_3"), system: bool = True
) -> list[dict]:
    out: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}] if system else []
    for t, (question, args, result, answer) in enumerate(AGENTSCOPE_TURNS[: turn + 1]):
        call = {
            "id": call_ids[t],
            "type": "function",
            "function": {"name": "multiply", "arguments": args},
        }
        out += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "Let me compute that.", "tool_calls": [call]},
            {"role": "tool", "content": result, "tool_call_id": call_ids[t]},
            {"role": "assistant", "content": answer},
        ]
    return out


@pytest.mark.parametrize("version", ["1.0.21", "1.0.8"])
def test_agentscope_1x_exports_rebuild_exactly(version: str) -> None:
    """GenAI protocol (1.0.21: prompt in agentscope.function.input, JSON-quoted conversation
    id) and the old protocol (1.0.8: span.kind '"AGENT"', project.run_id, repr strings)."""
    stats = IngestStats()
    got = trajectories(FIXTURES / f"agentscope-{version}.otlp.jsonl", stats)
    assert [_without_usage(t.messages) for t in got] == [agentscope_turn(0), agentscope_turn(1)]
    assert [t.final_answer for t in got] == ["The answer is 391.", "The answer is 144."]
    assert [(t.usage.prompt_tokens, t.usage.completion_tokens) for t in got] == [
        (70, 14),
        (110, 14),
    ]
    assert {t.provenance.source_id for t in got} == {got[0].provenance.source_id}
    assert not got[0].provenance.source_id.startswith('"')  # JSON quotes removed
    assert [t["function"]["name"] for t in got[0].tools] == ["multiply"]
    assert stats.read["missing_inputs"] == 0 and not stats.skipped


def test_agentscope_2x_tracing_middleware_export() -> None:
    """2.0.10 `TracingMiddleware`: prompts in gen_ai.input.messages (parts form)."""
    stats = IngestStats()
    first, second = trajectories(FIXTURES / "agentscope-2.0.10.otlp.jsonl", stats)
    dialogue = _without_usage(first.messages)
    assert [m["role"] for m in dialogue] == ["system", "user", "assistant", "tool", "assistant"]
    assert dialogue[:3] == agentscope_turn(0, ("call_1",))[:3]
    assert "391" in dialogue[3]["content"] and dialogue[3]["tool_call_id"] == "call_1"
    assert [t.final_answer for t in (first, second)] == ["The answer is 391.", "The answer is 144."]
    assert second.messages[-1].content == "The answer is 144."
    assert second.messages[-3].tool_calls[0].function.arguments == {"a": 12, "b": 12}
    assert stats.read["missing_inputs"] == 0 and stats.read["conversations"] == 1


def test_agentscope_2x_later_turn_context_is_split_per_step() -> None:
    """agentscope 2.x keeps a whole earlier turn in ONE assistant message with interleaved
    parts (text, tool_call, tool_call_response, text) and a JSON list of TextBlock reprs as
    the tool response: the rebuild splits it into steps."""
    _, second = trajectories(FIXTURES / "agentscope-2.0.10.otlp.jsonl")
    assert _without_usage(second.messages) == agentscope_turn(1)
    assert second.metadata["prompt_check"] == "agree"


def test_agentscope_2_0_6_chat_spans_without_prompt_are_counted() -> None:
    """2.0.0-2.0.6 chat spans carry no prompt: counted, and the dialogue is assembled from
    the agent input and the steps, with no invented system prompt."""
    stats = IngestStats()
    got = trajectories(FIXTURES / "agentscope-2.0.6.otlp.jsonl", stats)
    assert stats.read["missing_inputs"] == 4
    assert [t.metadata["prompt_check"] for t in got] == ["no_prompt", "no_prompt"]
    assert [_without_usage(t.messages) for t in got] == [
        agentscope_turn(0, system=False),
        agentscope_turn(1, system=False),
    ]


def test_json_format_exporter_snippet_output() -> None:
    """What the exporter snippet in docs/ingest-otel.md writes (protobuf json_format: base64
    ids, enum names, logs with the event-based content) reads through `read_traces`."""
    from agentmill.ingest import read_traces

    stats = IngestStats()
    opts = IngestOptions(logs=FIXTURES / "json-format.logs.jsonl")
    [traj] = read_traces("otel", FIXTURES / "json-format.traces.jsonl", opts, stats)
    assert [m.to_dict() for m in traj.messages] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello."},
        {
            "role": "assistant",
            "content": "Hello!",
            "usage": {"prompt_tokens": 12, "completion_tokens": 2},
        },
    ]
    assert traj.provenance.source_id == "session-7" and len(traj.provenance.extra["trace_id"]) == 32
    assert stats.read["log_records_joined"] == 3 and stats.read["missing_inputs"] == 0


# --- bad input ------------------------------------------------------------------------------


def test_truncated_last_line_is_a_counted_skip_or_strict_error(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", batch=False)
    lines = traces.read_text().splitlines(keepends=True)
    torn = tmp_path / "torn.jsonl"
    torn.write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    stats = IngestStats()
    convs = conversations(torn, stats)
    # the torn line held the 2nd turn's root, the only span of that trace naming the
    # conversation: its other spans stand alone under their trace id
    assert [len(c) for c in convs] == [4, 3] and convs[1][0].conversation_id == convs[1][0].trace_id
    assert stats.skipped["invalid_json"] == 1
    assert stats.examples["invalid_json"] == f"{torn}:{len(lines)}"
    with pytest.raises(UserError, match=rf"torn.jsonl:{len(lines)}: invalid_json"):
        conversations(torn, strict=True)


def test_bad_files_are_one_line_user_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(UserError, match="is empty; write OTLP/JSON"):
        conversations(empty)
    other = tmp_path / "tasks.jsonl"
    other.write_text('{"question": "2+2?"}\n')
    with pytest.raises(UserError, match="not OTLP/JSON traces .*'resourceSpans'"):
        conversations(other)
    binary = tmp_path / "traces.pb"
    binary.write_bytes(b"\x0a\x8f\x01\x12\x00garbage")
    with pytest.raises(UserError, match="no OTLP/JSON traces"):
        conversations(binary)
    _, logs = capture_run(tmp_path, "logs")
    with pytest.raises(UserError, match="holds OTLP logs, not traces: pass it as --logs"):
        conversations(logs)
    traces = tmp_path / "logs.traces.jsonl"
    with pytest.raises(UserError, match="logs file not found"):
        conversations(traces, logs=tmp_path / "missing.jsonl")


def test_bad_span_and_non_otlp_line_are_counted(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", batch=True)
    doc = json.loads(traces.read_text().splitlines()[0])
    doc["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "not-an-id"
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(json.dumps(doc) + "\n" + '{"hello": 1}\n')
    stats = IngestStats()
    [spans] = conversations(mixed, stats)
    assert len(spans) == 7
    assert stats.skipped == {"bad_span": 1, "not_otlp": 1}
    assert "mixed.jsonl:1: bad id 'not-an-id'" in stats.examples["bad_span"]


def test_duplicate_spans_are_kept_once(tmp_path: Path) -> None:
    traces, _ = capture_run(tmp_path, "semconv", batch=True)
    twice = tmp_path / "twice.jsonl"
    twice.write_text(traces.read_text() * 2)
    stats = IngestStats()
    [spans] = conversations(twice, stats)
    assert len(spans) == 8 and stats.read["duplicate_spans"] == 8


# --- memory stays flat in the file's size ---------------------------------------------------


def _big_file(path: Path, n_conversations: int, per_line: int = 40) -> Path:
    """Hand-built OTLP/JSON: each conversation's 4 spans are spread over 4 different lines."""
    spans = []
    for c in range(n_conversations):
        trace = f"{c + 1:032x}"
        for k in range(4):
            attrs = [
                {"key": "gen_ai.conversation.id", "value": {"stringValue": f"conv-{c}"}},
                {
                    "key": "gen_ai.operation.name",
                    "value": {"stringValue": "chat" if k else "invoke_agent"},
                },
                {
                    "key": "gen_ai.input.messages",
                    "value": {
                        "stringValue": json.dumps(
                            [parts({"role": "user", "content": f"question {c} " + "x" * 300})]
                        )
                    },
                },
            ]
            span = {
                "traceId": trace,
                "spanId": f"{c * 4 + k + 1:016x}",
                "name": "s",
                "startTimeUnixNano": str(10**18 + c * 10 + k),
                "attributes": attrs,
            }
            if k:
                span["parentSpanId"] = f"{c * 4 + 1:016x}"
            spans.append(span)
    # interleave so that one line holds spans of many conversations
    spans = spans[0::4] + spans[1::4] + spans[2::4] + spans[3::4]
    with path.open("w") as f:
        for i in range(0, len(spans), per_line):
            doc = {
                "resourceSpans": [
                    {
                        "resource": {"attributes": []},
                        "scopeSpans": [
                            {"scope": {"name": "gen"}, "spans": spans[i : i + per_line]}
                        ],
                    }
                ]
            }
            f.write(json.dumps(doc) + "\n")
    return path


def _peak_bytes(path: Path) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = sum(len(c) for c in read_spans(path, IngestOptions(), IngestStats()))
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_flat_in_file_size(tmp_path: Path) -> None:
    half = _big_file(tmp_path / "half.jsonl", 1500)
    full = _big_file(tmp_path / "full.jsonl", 3000)
    assert full.stat().st_size > 1.9 * half.stat().st_size > 4_500_000
    peak_half, n_half = _peak_bytes(half)
    peak_full, n_full = _peak_bytes(full)
    assert (n_half, n_full) == (6_000, 12_000)
    # reading everything at once would need several times the file size; the spool keeps
    # the peak near one export request + one conversation, whatever the file's size
    assert peak_full < 1.3 * peak_half + 1_000_000, (peak_half, peak_full)
    assert peak_full < full.stat().st_size / 4
