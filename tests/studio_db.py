"""Build AgentScope Studio databases for the tests and the benchmark, filled as Studio fills them.

A conversation is written as a script (`RunScript`: turns of user input, model steps with tool
calls, answers). `spans_of` turns it into the raw OTLP spans agentscope exports (attribute
values as the SDK sends them: JSON-encoded strings, `Msg(...)` / `ToolResponse(...)` reprs),
for one protocol: "old" (agentscope 1.0.0-1.0.8), "genai" (1.0.9-1.0.21; `version` "1.0.9"
writes agent messages as one object) or "as2" (2.x; `version` < "2.0.7" chat spans carry no
prompt, "2.0.11" writes tool results as JSON objects). `build_db` stores them as Studio would:

- layout "new" (Studio >= 1.0.7): the span processor's decoding (every string attribute
  value that is JSON is parsed, dotted keys nested, old protocol converted), nanosecond times
  rendered through a JS double, status/scope/resource JSON, extracted columns, TypeORM DDL;
- layout "old" (Studio < 1.0.7): the old processor (same decoding, no conversion), ISO times;
- layout "migrated": old rows rewritten in place as MigrateSpanTable1740000000000 does
  (kind 0, scope agentscope 1.0.7, attributes converted).

`expected_dialogue` says, from the script alone, what the rebuilt trajectory must hold.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel

# --- scripts -------------------------------------------------------------------------------


@dataclass
class Call:
    name: str
    arguments: dict[str, Any]
    result: str
    error: str | None = None  # the tool failed with this message
    id: str = ""


@dataclass
class Step:
    text: str
    calls: list[Call] = field(default_factory=list)
    reasoning: str | None = None
    usage: tuple[int, int] = (120, 30)


@dataclass
class Turn:
    user: str
    steps: list[Step]  # the last one (text only) is the answer
    failed: str | None = None  # the last LLM call raised this error: no answer


@dataclass
class RunScript:
    run_id: str
    turns: list[Turn]
    project: str = "demo"
    name: str = "friday"
    start: datetime = datetime(2025, 11, 20, 10, 0, 0, tzinfo=UTC)
    agent: str = "Friday"
    agent_id: str = "agent_friday_1"
    system: str = "You're a helpful assistant named Friday."
    model: str = "qwen-max"
    tools: list[dict[str, Any]] = field(default_factory=lambda: [SEARCH, CALC])
    orphan_turn: int | None = None  # this turn's agent span names a parent never exported
    with_run_row: bool = True


SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    },
}
CALC = {
    "type": "function",
    "function": {
        "name": "calc",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}},
    },
}
TRICKY = 'It\'s "quoted", [bracketed] {braced} (parens), a\nnewline, unicode: 日本語 ✓ é, and \\ backslash'


def sample_run(run_id: str = "run-1", **kw: Any) -> RunScript:
    """Two turns: a tool-using one (one tool errors) and a follow-up, with tricky text."""
    t1 = Turn(
        user=f"What is 17*23? {TRICKY}",
        steps=[
            Step("Let me compute that.", [Call("calc", {"expr": "17*23"}, "391")], "think 1"),
            Step(
                "",
                [
                    Call("search", {"query": "17*23 'check'"}, "", error="Timeout after 30s"),
                    Call("search", {"query": "multiplication [table]"}, f"ok: {TRICKY}"),
                ],
                usage=(200, 40),
            ),
            Step(f"17*23 = 391. {TRICKY}", usage=(260, 20)),
        ],
    )
    t2 = Turn(user="And doubled?", steps=[Step("Doubled it is 782.", usage=(300, 10))])
    return RunScript(run_id=run_id, turns=[t1, t2], **kw)


# --- what the rebuild must give ------------------------------------------------------------


def expected_dialogue(run: RunScript, turn: int, system: bool = True) -> list[dict[str, Any]]:
    """The messages of turn `turn`'s trajectory: the dialogue so far (system prompt when the
    spans captured prompts), the user message, every step with usage, and the answer."""
    out: list[dict[str, Any]] = [{"role": "system", "content": run.system}] if system else []
    for t, tr in enumerate(run.turns[: turn + 1]):
        out.append({"role": "user", "content": tr.user})
        for s, step in enumerate(_done_steps(tr)):
            msg: dict[str, Any] = {"role": "assistant", "content": step.text or None}
            if step.calls:
                msg["tool_calls"] = [_call(run, t, s, i, c) for i, c in enumerate(step.calls)]
            if t == turn:
                if step.reasoning:
                    msg["reasoning"] = step.reasoning
                msg["usage"] = {"prompt_tokens": step.usage[0], "completion_tokens": step.usage[1]}
            out.append(msg)
            for i, c in enumerate(step.calls):
                text = c.error if c.error else c.result
                out.append(
                    {"role": "tool", "content": text, "tool_call_id": call_id(run, t, s, i, c)}
                )
    return out


def _done_steps(tr: Turn) -> list[Step]:
    return tr.steps[:-1] if tr.failed else tr.steps


def _call(run: RunScript, t: int, s: int, i: int, c: Call) -> dict[str, Any]:
    fn = {"name": c.name, "arguments": c.arguments}
    return {"id": call_id(run, t, s, i, c), "type": "function", "function": fn}


def call_id(run: RunScript, t: int, s: int, i: int, c: Call) -> str:
    return c.id or f"call_{run.run_id}_{t}_{s}_{i}"


# --- agentscope objects as their reprs -----------------------------------------------------


def msg_repr(msg_id: str, name: str, content: Any, role: str, ts: str) -> str:
    """Exactly agentscope 1.x's `Msg.__repr__`."""
    return (
        f"Msg(id='{msg_id}', name='{name}', content={content!r}, role='{role}', "
        f"metadata=None, timestamp='{ts}', invocation_id='None')"
    )


def tool_response_repr(text: str, resp_id: str) -> str:
    """agentscope 1.x's dataclass `ToolResponse` repr."""
    content = [{"type": "text", "text": text}]
    return (
        f"ToolResponse(content={content!r}, metadata=None, stream=False, is_last=True, "
        f"is_interrupted=False, id='{resp_id}')"
    )


class ToolResultState(StrEnum):  # the agentscope 2.x classes, so pydantic writes the repr
    SUCCESS = "success"
    ERROR = "error"


class TextBlock(BaseModel):
    type: str = "text"
    text: str
    id: str
    created_at: str
    finished_at: str | None = None


class ToolResponse2(BaseModel):
    content: list[TextBlock]
    state: ToolResultState = ToolResultState.SUCCESS
    metadata: dict[str, Any] = {}
    id: str

    def __repr_name__(self) -> str:
        return "ToolResponse"


# --- raw spans, as agentscope exports them -------------------------------------------------


@dataclass
class RawSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]  # flat, values as the SDK sends them
    scope: tuple[str, str]
    status: int = 1  # 0 unset, 1 ok, 2 error
    message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)


class _Clock:
    def __init__(self, start: datetime, rng: random.Random):
        self.ns = int(start.timestamp()) * 1_000_000_000 + rng.randrange(1_000_000)
        self.rng = rng

    def tick(self, ms: float) -> int:
        self.ns += int(ms * 1_000_000) + self.rng.randrange(1, 999_999)
        return self.ns


def spans_of(run: RunScript, protocol: str, version: str = "", seed: int = 0) -> list[RawSpan]:
    """The raw spans one run exports under `protocol` (see the module docstring)."""
    return _Writer(run, protocol, version, random.Random(f"{run.run_id}/{seed}")).spans()


class _Writer:
    def __init__(self, run: RunScript, protocol: str, version: str, rng: random.Random):
        self.run, self.protocol, self.rng = run, protocol, rng
        self.version = version or {"old": "1.0.8", "genai": "1.0.12", "as2": "2.0.8"}[protocol]
        self.clock = _Clock(run.start, rng)
        self.memory: list[tuple[Any, ...]] = []
        self.out: list[RawSpan] = []
        scope = "agentscope.tracing._trace" if protocol == "old" else "agentscope"
        self.scope = (scope, self.version)

    def spans(self) -> list[RawSpan]:
        for t, turn in enumerate(self.run.turns):
            self._turn(t, turn)
        return self.out

    def _id(self, n: int) -> str:
        return f"{self.rng.getrandbits(n * 4):0{n}x}"

    def _span(self, trace: str, parent: str | None, name: str, attrs: dict[str, Any]) -> RawSpan:
        start = self.clock.tick(0.3)
        span = RawSpan(trace, self._id(16), parent, name, start, start, attrs, self.scope)
        self.out.append(span)
        return span

    def _turn(self, t: int, turn: Turn) -> None:
        run, trace = self.run, self._id(32)
        parent = self._id(16) if run.orphan_turn == t else None
        ts = f"2025-11-20 10:00:{t:02d}.000"
        user_repr = msg_repr(f"u{t}", "user", turn.user, "user", ts)
        agent = self._span(trace, parent, "", self._agent_in(turn, user_repr))
        self.memory.append(("user", turn.user))
        for s, step in enumerate(turn.steps):
            if self.protocol == "old" or self.protocol == "genai":
                self._format_span(trace, agent.span_id)
            failed = turn.failed if s == len(turn.steps) - 1 else None
            self._chat(trace, agent.span_id, t, s, step, failed)
            if failed:
                break
            for i, c in enumerate(step.calls):
                self._tool(trace, agent.span_id, call_id(run, t, s, i, c), c)
        agent.end_ns = self.clock.tick(1)
        if turn.failed:
            agent.status, agent.message = 2, turn.failed
        else:
            reply = [{"type": "text", "text": turn.steps[-1].text}]
            agent.attributes.update(
                self._agent_out(msg_repr(f"r{t}", run.agent, reply, "assistant", ts), reply)
            )
        agent.name = self._agent_name()

    # agent spans

    def _agent_name(self) -> str:
        return "ReActAgent.reply" if self.protocol == "old" else f"invoke_agent {self.run.agent}"

    def _agent_in(self, turn: Turn, user_repr: str) -> dict[str, Any]:
        run = self.run
        if self.protocol == "old":
            return {
                "span.kind": '"AGENT"',
                "project.run_id": json.dumps(run.run_id),
                "input": json.dumps({"args": [user_repr], "kwargs": {}}, ensure_ascii=False),
                "metadata": json.dumps({"id": run.agent_id, "name": run.agent}),
            }
        parts = {
            "role": "user",
            "parts": [{"type": "text", "content": turn.user}],
            "name": "user",
            "finish_reason": "stop",
        }
        attrs = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": run.agent,
            "gen_ai.agent.description": "A ReAct agent.",
            "gen_ai.input.messages": _dumps(parts if self.version == "1.0.9" else [parts]),
            "gen_ai.conversation.id": self._conversation(),
        }
        if self.protocol == "genai":
            attrs["gen_ai.agent.id"] = run.agent_id
            attrs["agentscope.function.input"] = _dumps({"args": [], "kwargs": {"msg": user_repr}})
        return attrs

    def _agent_out(self, reply_repr: str, reply: list[dict[str, Any]]) -> dict[str, Any]:
        if self.protocol == "old":
            return {"output": json.dumps(reply_repr, ensure_ascii=False)}
        text = reply[0]["text"]
        parts = {
            "role": "assistant",
            "parts": [{"type": "text", "content": text}],
            "name": self.run.agent,
            "finish_reason": "stop",
        }
        attrs = {"gen_ai.output.messages": _dumps(parts if self.version == "1.0.9" else [parts])}
        if self.protocol == "genai":
            attrs["agentscope.function.output"] = json.dumps(reply_repr, ensure_ascii=False)
        return attrs

    def _conversation(self) -> str:
        # 1.x JSON-quotes the run id; 2.x sends the raw session id
        return json.dumps(self.run.run_id) if self.protocol == "genai" else self.run.run_id

    # formatter, chat and tool spans

    def _format_span(self, trace: str, parent: str) -> None:
        if self.protocol == "old":
            attrs = {"span.kind": '"FORMATTER"', "project.run_id": json.dumps(self.run.run_id)}
            attrs["input"] = _dumps({"args": [["Msg(...)"]], "kwargs": {}})
            self._span(trace, parent, "OpenAIChatFormatter.format", attrs).end_ns = self.clock.tick(
                0.2
            )
        else:  # GenAI format spans carry no conversation id: Studio files them under 'unknown'
            attrs = {"gen_ai.operation.name": "format", "agentscope.format.target": "openai"}
            self._span(trace, parent, "format openai", attrs).end_ns = self.clock.tick(0.2)

    def _chat(
        self, trace: str, parent: str, t: int, s: int, step: Step, failed: str | None
    ) -> None:
        run = self.run
        prompt = self._prompt()
        attrs: dict[str, Any]
        if self.protocol == "old":
            attrs = {"span.kind": '"LLM"', "project.run_id": json.dumps(run.run_id)}
            attrs["input"] = _dumps(
                {"args": [prompt], "kwargs": {"tools": run.tools, "tool_choice": None}}
            )
            attrs["metadata"] = _dumps({"model_name": run.model, "stream": False})
        else:
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "dashscope",
                "gen_ai.request.model": run.model,
                "gen_ai.conversation.id": self._conversation(),
                "gen_ai.tool.definitions": _dumps([_flat_tool(x) for x in run.tools]),
            }
            if self.protocol == "genai":
                attrs["agentscope.function.input"] = _dumps(
                    {"args": [prompt], "kwargs": {"tools": run.tools}}
                )
            elif _v(self.version) >= (2, 0, 7):
                attrs["gen_ai.input.messages"] = _dumps(self._prompt_parts())
        span = self._span(trace, parent, f"chat {run.model}", attrs)
        span.end_ns = self.clock.tick(800)
        if self.protocol == "old":
            span.name = "OpenAIChatModel.__call__"
        if failed:
            span.status, span.message = 2, failed
            return
        blocks = [{"type": "thinking", "thinking": step.reasoning}] if step.reasoning else []
        blocks += [{"type": "text", "text": step.text}] if step.text else []
        ids = [call_id(run, t, s, i, c) for i, c in enumerate(step.calls)]
        blocks += [
            {"type": "tool_use", "id": i, "name": c.name, "input": c.arguments}
            for i, c in zip(ids, step.calls, strict=True)
        ]
        usage = {
            "input_tokens": step.usage[0],
            "output_tokens": step.usage[1],
            "time": 0.8,
            "type": "chat",
        }
        response = {
            "content": blocks,
            "id": self._id(8),
            "created_at": "2025-11-20 10:00:01.000",
            "type": "chat",
            "usage": usage,
            "metadata": None,
        }
        if self.protocol == "old":
            attrs["output"] = _dumps(response)
        else:
            attrs["gen_ai.output.messages"] = _dumps(
                [
                    {
                        "role": "assistant",
                        "parts": [_part(b) for b in blocks],
                        "finish_reason": "stop",
                    }
                ]
            )
            attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"] = step.usage
            attrs["gen_ai.response.finish_reasons"] = '["stop"]'
            if self.protocol == "genai":
                attrs["agentscope.function.output"] = _dumps(response)
        self.memory.append(("assistant", step.text, list(zip(ids, step.calls, strict=True))))

    def _tool(self, trace: str, parent: str, cid: str, c: Call) -> None:
        call = {"type": "tool_use", "id": cid, "name": c.name, "input": c.arguments}
        text = c.error or c.result
        if self.protocol == "old":
            attrs = {"span.kind": '"TOOL"', "project.run_id": json.dumps(self.run.run_id)}
            attrs["input"] = _dumps({"tool_call": call})
            attrs["metadata"] = _dumps(call)
        else:
            attrs = {
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.call.id": cid,
                "gen_ai.tool.name": c.name,
                "gen_ai.tool.call.arguments": _dumps(c.arguments),
                "gen_ai.conversation.id": self._conversation(),
            }
            if self.protocol == "genai":
                attrs["agentscope.function.input"] = _dumps({"tool_call": call})
        span = self._span(
            trace,
            parent,
            f"execute_tool {c.name}" if self.protocol != "old" else "call_tool_function",
            attrs,
        )
        span.end_ns = self.clock.tick(50)
        self.memory.append(("tool", cid, c.name, text))
        if c.error and self.protocol != "as2":  # 1.x: the tool raised; no result attribute
            span.status, span.message = 2, c.error
            span.events.append(
                {
                    "name": "exception",
                    "time": span.end_ns,
                    "attributes": {"exception.type": "TimeoutError", "exception.message": c.error},
                }
            )
            return
        result = self._result(text, c.error is not None)
        attrs["output" if self.protocol == "old" else "gen_ai.tool.call.result"] = result
        if self.protocol == "genai":
            attrs["agentscope.function.output"] = result

    def _result(self, text: str, error: bool) -> str:
        rid = self._id(8)
        if self.protocol != "as2":
            return json.dumps(tool_response_repr(text, rid), ensure_ascii=False)
        block = TextBlock(text=text, id=self._id(8), created_at="2025-11-20 10:00:02.000")
        state = ToolResultState.ERROR if error else ToolResultState.SUCCESS
        resp = ToolResponse2(content=[block], state=state, id=rid)
        if _v(self.version) >= (2, 0, 11):
            return _dumps(resp.model_dump(mode="json"))
        return json.dumps(repr(resp), ensure_ascii=False)

    # prompts (agentscope's OpenAI formatter; 2.x parts)

    def _prompt(self) -> list[dict[str, Any]]:
        run = self.run
        out: list[dict[str, Any]] = [
            {"role": "system", "name": "system", "content": [{"type": "text", "text": run.system}]}
        ]
        for item in self.memory:
            if item[0] == "user":
                out.append(
                    {"role": "user", "name": "user", "content": [{"type": "text", "text": item[1]}]}
                )
            elif item[0] == "assistant":
                msg: dict[str, Any] = {
                    "role": "assistant",
                    "name": run.agent,
                    "content": [{"type": "text", "text": item[1]}] if item[1] else None,
                }
                if item[2]:
                    msg["tool_calls"] = [
                        {
                            "id": i,
                            "type": "function",
                            "function": {
                                "name": c.name,
                                "arguments": json.dumps(c.arguments, ensure_ascii=False),
                            },
                        }
                        for i, c in item[2]
                    ]
                out.append(msg)
            else:
                out.append(
                    {"role": "tool", "tool_call_id": item[1], "content": item[3], "name": item[2]}
                )
        return out

    def _prompt_parts(self) -> list[dict[str, Any]]:
        """agentscope 2.x's context (as its 2.0.10 export shows): one assistant message per
        turn holding every part in order (text, tool calls, tool responses as a JSON list
        of TextBlock reprs, text), the reply in progress included (empty at first)."""
        out: list[dict[str, Any]] = [
            {"role": "system", "parts": [{"type": "text", "content": self.run.system}]}
        ]
        reply: dict[str, Any] | None = None
        for item in self.memory:
            if item[0] == "user":
                out.append(_parts_msg("user", [{"type": "text", "content": item[1]}], "user"))
                reply = _parts_msg("assistant", [], self.run.agent)
                out.append(reply)
            elif item[0] == "assistant":
                assert reply is not None
                reply["parts"] += [{"type": "text", "content": item[1]}] if item[1] else []
                reply["parts"] += [
                    {"type": "tool_call", "id": i, "name": c.name, "arguments": c.arguments}
                    for i, c in item[2]
                ]
            else:
                assert reply is not None
                block = repr(TextBlock(text=item[3], id=self._id(8), created_at="2025-11-20"))
                response = json.dumps([block], ensure_ascii=False)
                reply["parts"].append(
                    {"type": "tool_call_response", "id": item[1], "response": response}
                )
        return out


def _parts_msg(role: str, parts: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {"role": role, "parts": parts, "name": name, "finish_reason": "stop"}


def _part(block: dict[str, Any]) -> dict[str, Any]:
    if block["type"] == "text":
        return {"type": "text", "content": block["text"]}
    if block["type"] == "thinking":
        return {"type": "reasoning", "content": block["thinking"]}
    return {
        "type": "tool_call",
        "id": block["id"],
        "name": block["name"],
        "arguments": block["input"],
    }


def _flat_tool(tool: dict[str, Any]) -> dict[str, Any]:
    return {"type": tool["type"], **tool["function"]}


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# --- Studio's decoding ---------------------------------------------------------------------


def load_json_strings(attrs: dict[str, Any]) -> dict[str, Any]:
    """Studio's `loadJsonStrings`: every string value that parses as JSON is replaced."""
    out = {}
    for k, v in attrs.items():
        if isinstance(v, str):
            with contextlib.suppress(ValueError):
                v = json.loads(v)
        out[k] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """Studio's `unflattenObject`: dotted keys become nested objects."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *path, leaf = key.split(".")
        node = out
        for part in path:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = value
    return out


def convert_old_protocol(attrs: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """Studio's `SpanProcessor.convertOldProtocolToNew` on decoded (nested) attributes."""
    if "gen_ai" in attrs:
        return name, attrs
    meta = attrs.get("metadata") if isinstance(attrs.get("metadata"), dict) else {}
    fn: dict[str, Any] = {"name": name, "input": {}, "output": {}}
    new: dict[str, Any] = {
        "gen_ai": {
            "conversation": {"id": attrs.get("project", {}).get("run_id")},
            "request": {},
            "operation": {},
            "agent": {},
            "tool": {},
        },
        "agentscope": {"function": fn},
    }
    g = new["gen_ai"]
    if attrs.get("input"):
        fn["input"] = attrs["input"]
    output = attrs.get("output")
    if output:
        fn["output"] = output
        if isinstance(output, dict) and isinstance(output.get("usage"), dict):
            g["usage"] = {
                "input_tokens": output["usage"].get("input_tokens"),
                "output_tokens": output["usage"].get("output_tokens"),
            }
    kind = attrs.get("span", {}).get("kind")
    op, label = {
        "AGENT": ("invoke_agent", "name"),
        "TOOL": ("execute_tool", "name"),
        "LLM": ("chat", "model_name"),
        "EMBEDDING": ("embeddings", "model_name"),
        "FORMATTER": ("format", "name"),
    }.get(kind, ("unknown", None))
    g["operation"]["name"] = op
    if label is None:
        return name, new
    value = meta.get(label) or ""
    if op == "invoke_agent":
        g["agent"]["name"] = value
    elif op == "execute_tool":
        g["tool"]["name"] = value
    elif op in ("chat", "embeddings"):
        g["request"]["model"] = value
    return f"{op} {value}", new


def js_number(n: int | float) -> str:
    """`Number(n).toString()` in JavaScript: the shortest round-trip digits, zero-padded."""
    return str(int(Decimal(repr(float(n)))))


def iso(ns: int) -> str:
    """JavaScript's `new Date(ms).toISOString()` of a nanosecond time."""
    ms = ns // 1_000_000
    when = datetime.fromtimestamp(ms / 1000, UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


# --- rows ----------------------------------------------------------------------------------


def new_row(span: RawSpan) -> dict[str, Any]:
    """One new-layout span_table row, as Studio >= 1.0.7 ingests the span."""
    attrs = unflatten(load_json_strings(span.attributes))
    name = span.name
    if "agentscope.tracing._trace" in span.scope[0]:
        name, attrs = convert_old_protocol(attrs, name)
    events = [
        {
            "name": e["name"],
            "time": js_number(e["time"]),
            "attributes": unflatten(load_json_strings(e["attributes"])),
            "droppedAttributesCount": 0,
        }
        for e in span.events
    ]
    start, end = js_number(span.start_ns), js_number(span.end_ns)
    scope = {"name": span.scope[0], "version": span.scope[1], "attributes": {}}
    return _new_columns(
        span,
        name,
        attrs,
        start,
        end,
        events,
        scope,
        {"code": span.status, "message": span.message},
        kind=1,
    )


def _new_columns(
    span: RawSpan,
    name: str,
    attrs: dict[str, Any],
    start: str,
    end: str,
    events: list[Any],
    scope: dict[str, Any],
    status: dict[str, Any],
    kind: int,
) -> dict[str, Any]:
    g = attrs.get("gen_ai") if isinstance(attrs.get("gen_ai"), dict) else {}
    conv = g.get("conversation", {}).get("id") or attrs.get("project", {}).get("run_id")
    usage = g.get("usage") if isinstance(g.get("usage"), dict) else {}
    tin, tout = usage.get("input_tokens"), usage.get("output_tokens")
    tin, tout = (tin if isinstance(tin, int) else None), (tout if isinstance(tout, int) else None)
    model = g.get("request", {}).get("model")
    return {
        "id": span.span_id,
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "traceState": None,
        "parentSpanId": span.parent_id or "",
        "flags": None,
        "name": name,
        "kind": kind,
        "startTimeUnixNano": start,
        "endTimeUnixNano": end,
        "attributes": json.dumps(attrs, ensure_ascii=False),
        "droppedAttributesCount": 0,
        "events": json.dumps(events, ensure_ascii=False),
        "droppedEventsCount": 0,
        "links": "[]",
        "droppedLinksCount": 0,
        "status": json.dumps(status),
        "resource": json.dumps({"attributes": {"service.name": "agentscope"}}),
        "scope": json.dumps(scope),
        "statusCode": status["code"] or 0,
        "serviceName": "agentscope",
        "operationName": g.get("operation", {}).get("name"),
        "instrumentationName": None,
        "instrumentationVersion": None,
        "model": model if isinstance(model, str) else None,
        "inputTokens": tin,
        "outputTokens": tout,
        "totalTokens": (tin or 0) + (tout or 0) if tin is not None or tout is not None else None,
        "conversationId": str(conv) if conv not in (None, "") else "unknown",
        "latencyNs": float(span.end_ns - span.start_ns),
    }


def old_row(span: RawSpan) -> dict[str, Any]:
    """One old-layout span_table row, as Studio < 1.0.7 ingested the span."""
    attrs = unflatten(load_json_strings(span.attributes))
    if not any(k.startswith("metadata") for k in attrs):
        attrs["metadata"] = {}
    events = [
        {"name": e["name"], "timestamp": iso(e["time"]), "attributes": e["attributes"]}
        for e in span.events
    ]
    return {
        "id": span.span_id,
        "traceId": span.trace_id,
        "parentSpanId": span.parent_id or "",
        "name": span.name,
        "spanKind": attrs.get("span", {}).get("kind") or "COMMON",
        "attributes": json.dumps(attrs, ensure_ascii=False),
        "startTime": iso(span.start_ns),
        "endTime": iso(span.end_ns),
        "latencyMs": (span.end_ns - span.start_ns) // 1_000_000,
        "status": ["UNSET", "OK", "ERROR"][span.status],
        "statusMessage": span.message,
        "events": json.dumps(events, ensure_ascii=False),
        "run_id": attrs.get("project", {}).get("run_id"),
    }


def migrated_row(old: dict[str, Any]) -> dict[str, Any]:
    """An old-layout row rewritten by MigrateSpanTable1740000000000 (`convertOldRecordToSpanTable`)."""
    attrs = json.loads(old["attributes"])
    name, attrs = convert_old_protocol(attrs, old["name"])
    start, end = (js_number(_iso_to_ms(old[k]) * 1_000_000) for k in ("startTime", "endTime"))
    code = {"OK": 1, "ERROR": 2}.get(old["status"], 0)
    status = (
        {"code": code, "message": old["statusMessage"]}
        if old["statusMessage"]
        else {"code": code, "message": ""}
    )
    events = [
        {
            "name": e["name"],
            "time": js_number(_iso_to_ms(e["timestamp"]) * 1_000_000),
            "attributes": e["attributes"],
            "droppedAttributesCount": 0,
        }
        for e in json.loads(old["events"])
    ]
    span = RawSpan(
        old["traceId"],
        old["id"],
        old["parentSpanId"],
        name,
        0,
        old["latencyMs"] * 1_000_000,
        {},
        ("agentscope", "1.0.7"),
    )
    row = _new_columns(
        span,
        name,
        attrs,
        start,
        end,
        events,
        {"name": "agentscope", "version": "1.0.7", "attributes": {}},
        status,
        kind=0,
    )
    row["parentSpanId"] = old["parentSpanId"]
    row["resource"] = json.dumps({"attributes": {}})
    row["serviceName"] = None
    row["instrumentationName"], row["instrumentationVersion"] = "agentscope", "1.0.7"
    return row


def _iso_to_ms(text: str) -> int:
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(when.timestamp()) * 1000 + when.microsecond // 1000


# --- the database --------------------------------------------------------------------------

RUN_DDL = 'CREATE TABLE "run_table" ("id" varchar PRIMARY KEY NOT NULL, "project" varchar NOT NULL, "name" varchar NOT NULL, "timestamp" varchar NOT NULL, "run_dir" varchar NOT NULL, "pid" integer NOT NULL, "status" varchar NOT NULL DEFAULT (\'done\'))'
OTHER_DDL = [
    'CREATE TABLE "reply_table" ("replyId" varchar PRIMARY KEY NOT NULL, "replyRole" varchar NOT NULL, "replyName" varchar NOT NULL, "createdAt" varchar NOT NULL, "finishedAt" varchar, "run_id" varchar NOT NULL, CONSTRAINT "FK_reply_run" FOREIGN KEY ("run_id") REFERENCES "run_table" ("id") ON DELETE CASCADE)',
    'CREATE TABLE "message_table" ("id" varchar PRIMARY KEY NOT NULL, "msg" json NOT NULL, "run_id" varchar NOT NULL, "replyId" varchar NOT NULL, "speech" json, CONSTRAINT "FK_msg_run" FOREIGN KEY ("run_id") REFERENCES "run_table" ("id") ON DELETE CASCADE)',
    'CREATE TABLE "input_request_table" ("requestId" varchar PRIMARY KEY NOT NULL, "agentId" varchar NOT NULL, "agentName" varchar NOT NULL, "structuredInput" json NOT NULL, "run_id" varchar NOT NULL)',
    'CREATE TABLE "migrations" ("id" integer PRIMARY KEY AUTOINCREMENT NOT NULL, "timestamp" bigint NOT NULL, "name" varchar NOT NULL)',
    'CREATE TABLE "typeorm_metadata" ("type" varchar NOT NULL, "database" varchar, "schema" varchar, "table" varchar, "name" varchar, "value" text)',
    'CREATE TABLE "friday_app_message_table" ("id" varchar PRIMARY KEY NOT NULL, "msg" json NOT NULL)',
]
OLD_SPAN_DDL = 'CREATE TABLE "span_table" ("id" varchar PRIMARY KEY NOT NULL, "traceId" varchar, "parentSpanId" varchar, "name" varchar NOT NULL, "spanKind" varchar NOT NULL, "attributes" json NOT NULL, "startTime" varchar NOT NULL, "endTime" varchar NOT NULL, "latencyMs" float NOT NULL, "status" varchar NOT NULL, "statusMessage" varchar NOT NULL, "events" json NOT NULL, "run_id" varchar NOT NULL, CONSTRAINT "FK_span_run" FOREIGN KEY ("run_id") REFERENCES "run_table" ("id") ON DELETE CASCADE)'
NEW_COLUMNS = [
    "id",
    "traceId",
    "spanId",
    "traceState",
    "parentSpanId",
    "flags",
    "name",
    "kind",
    "startTimeUnixNano",
    "endTimeUnixNano",
    "attributes",
    "droppedAttributesCount",
    "events",
    "droppedEventsCount",
    "links",
    "droppedLinksCount",
    "status",
    "resource",
    "scope",
    "statusCode",
    "serviceName",
    "operationName",
    "instrumentationName",
    "instrumentationVersion",
    "model",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "conversationId",
    "latencyNs",
]
_NEW_TYPES = {
    "flags": "integer",
    "kind": "integer NOT NULL",
    "attributes": "json NOT NULL",
    "events": "json",
    "links": "json",
    "status": "json NOT NULL",
    "resource": "json NOT NULL",
    "scope": "json NOT NULL",
    "latencyNs": "float NOT NULL",
}
_NEW_INDEXED = [
    "traceId",
    "spanId",
    "parentSpanId",
    "startTimeUnixNano",
    "statusCode",
    "latencyNs",
    "serviceName",
    "operationName",
    "instrumentationName",
    "model",
    "inputTokens",
    "outputTokens",
    "totalTokens",
    "conversationId",
]


def new_span_ddl() -> list[str]:
    cols = []
    for c in NEW_COLUMNS:
        kind = _NEW_TYPES.get(
            c,
            "integer"
            if c.endswith("Count") or c.endswith("Tokens") or c == "statusCode"
            else "varchar",
        )
        cols.append(f'"{c}" {kind}' + (" PRIMARY KEY NOT NULL" if c == "id" else ""))
    ddl = [f'CREATE TABLE "span_table" ({", ".join(cols)})']
    return ddl + [f'CREATE INDEX "IDX_span_{c}" ON "span_table" ("{c}")' for c in _NEW_INDEXED]


def build_db(
    path: Path,
    runs: list[RunScript],
    layout: str = "new",
    protocol: str = "genai",
    version: str = "",
    extra_spans: list[RawSpan] | None = None,
) -> Path:
    """A Studio database at `path` holding `runs` (see the module docstring)."""
    db = sqlite3.connect(path)
    with db:
        create_tables(db, layout)
        for run in runs:
            write_run(db, run, layout, protocol, version)
        if extra_spans:
            insert_spans(db, extra_spans, layout)
    db.close()
    return path


def create_tables(db: sqlite3.Connection, layout: str) -> None:
    for ddl in [RUN_DDL, *OTHER_DDL, *(new_span_ddl() if layout != "old" else [OLD_SPAN_DDL])]:
        db.execute(ddl)
    if layout != "old":
        db.execute(
            "INSERT INTO migrations (timestamp, name) VALUES (1740000000000, 'MigrateSpanTable1740000000000')"
        )


def write_run(
    db: sqlite3.Connection, run: RunScript, layout: str, protocol: str, version: str = ""
) -> None:
    if run.with_run_row:
        stamp = run.start.strftime("%Y-%m-%d %H:%M:%S.") + f"{run.start.microsecond // 1000:03d}"
        db.execute(
            "INSERT INTO run_table VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.project, run.name, stamp, f"/runs/{run.run_id}", 4242, "done"),
        )
        _messages(db, run)
    insert_spans(db, spans_of(run, protocol, version), layout)


def insert_spans(db: sqlite3.Connection, spans: list[RawSpan], layout: str) -> None:
    if layout == "old":
        rows = [old_row(s) for s in spans]
    elif layout == "migrated":
        rows = [migrated_row(old_row(s)) for s in spans]
    else:
        rows = [new_row(s) for s in spans]
    if not rows:
        return
    cols = list(rows[0])
    sql = f"INSERT OR REPLACE INTO span_table ({', '.join(f'{chr(34)}{c}{chr(34)}' for c in cols)}) VALUES ({', '.join('?' * len(cols))})"
    db.executemany(sql, [tuple(r[c] for c in cols) for r in rows])


def _messages(db: sqlite3.Connection, run: RunScript) -> None:
    """reply_table / message_table rows, as agentscope's pushMessage fills them."""
    for t, turn in enumerate(run.turns):
        stamp = f"2025-11-20 10:00:{t:02d}.000"
        for who, role, text in (
            ("user", "user", turn.user),
            (run.agent, "assistant", turn.steps[-1].text),
        ):
            reply = f"{run.run_id}-reply-{t}-{role}"
            db.execute(
                "INSERT INTO reply_table VALUES (?, ?, ?, ?, ?, ?)",
                (reply, role, who, stamp, stamp, run.run_id),
            )
            msg = {
                "name": who,
                "role": role,
                "content": [{"type": "text", "text": text}],
                "metadata": None,
                "timestamp": stamp,
            }
            db.execute(
                "INSERT INTO message_table VALUES (?, ?, ?, ?, NULL)",
                (f"{reply}-msg", json.dumps(msg, ensure_ascii=False), run.run_id, reply),
            )
