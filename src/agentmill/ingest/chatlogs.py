"""Chat logs: JSONL of OpenAI-format conversations -> one `Trajectory` per line.

A line is a record `{"messages": [...], "tools"?: [...], ...}` or a bare list of messages.
Accepted on the way in: `tools` (or legacy `functions`) in the OpenAI form
`{"type": "function", "function": {...}}` or flat `{"name", "description", "parameters"}`;
tool-call arguments as JSON strings or dicts (text that is not a JSON object is kept in
`raw_arguments` and counted as malformed); `content` None, a string or a list of parts;
`reasoning_content` / `reasoning` -> `Message.reasoning`; `developer` -> system; legacy
`function_call` and `role: function` -> tool calls and tool results. Other top-level keys
(`id`, `model`, `metadata`, ...) are kept in the trajectory's metadata; `id` is also the
provenance `source_id`.

The whole conversation is one trajectory; its turn is the LAST user message
(`metadata["query_index"]`) and its final answer is the text of the last message when that
is an assistant message without tool calls (else None: the conversation did not end with
an answer). A line that is not JSON or not a conversation is a counted skip naming
`file:line`; under `strict` it stops the ingest.

>>> import tempfile, pathlib
>>> from agentmill.ingest.base import IngestOptions, IngestStats
>>> p = pathlib.Path(tempfile.mkdtemp()) / "log.jsonl"
>>> _ = p.write_text('{"messages": [{"role": "user", "content": "2+2?"},'
...                  ' {"role": "assistant", "content": "4"}]}\\nnot json\\n')
>>> stats = IngestStats()
>>> [t.final_answer for t in read(p, IngestOptions(), stats)], dict(stats.skipped)
(['4'], {'invalid JSON': 1})
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import BadRecord
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.records import (
    AgentStats,
    FunctionCall,
    Message,
    Provenance,
    Task,
    ToolCall,
    Trajectory,
    Usage,
    content_hash,
)

SOURCE = "chat-logs"
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant",
         "tool": "tool", "function": "tool"}  # fmt: skip
_RECORD_KEYS = ("messages", "tools", "functions")


def read(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[Trajectory]:
    """One trajectory per conversation line of `path`, streaming."""
    with path.open("rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            stats.read["lines"] += 1
            where = f"{path}:{lineno}"
            try:
                traj = trajectory(_decode(line), path, lineno, stats)
            except BadRecord as e:
                stats.skip(str(e), where, opts.strict)
                continue
            stats.built += 1
            yield traj


def _decode(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        raise BadRecord("invalid JSON") from None


def trajectory(record: Any, path: Path, lineno: int, stats: IngestStats) -> Trajectory:
    """A trajectory from one decoded line (a record dict or a bare message list)."""
    if isinstance(record, list):
        record = {"messages": record}
    raw = record.get("messages") if isinstance(record, dict) else None
    if not isinstance(raw, list) or not raw:
        raise BadRecord("not a conversation (no messages list)")
    messages = parse_messages(raw)
    tools = normalize_tools(record.get("tools") or record.get("functions"), stats)
    stats.read["messages"] += len(messages)
    agent = agent_stats(messages, tools)
    stats.read["malformed tool-call arguments"] += agent.malformed_calls
    return _build(record, messages, tools, agent, path, lineno)


def _build(
    record: dict[str, Any],
    messages: list[Message],
    tools: list[dict[str, Any]],
    agent: AgentStats,
    path: Path,
    lineno: int,
) -> Trajectory:
    query = last_index(messages, "user")
    final = final_answer(messages)
    extra = {k: v for k, v in record.items() if k not in _RECORD_KEYS}
    rid = extra.get("id")
    prompt = messages[: query + 1] if query is not None else messages[:0]
    return Trajectory(
        id=content_hash([SOURCE, record], 24),
        task_id=Task.compute_id(prompt, None, tools),
        messages=messages,
        tools=tools,
        final_answer=final,
        agent=agent,
        stop_reason="answer" if final is not None else "no_answer",
        usage=usage_of(record.get("usage")),
        model=extra["model"] if isinstance(extra.get("model"), str) else None,
        provenance=Provenance(
            source=SOURCE,
            file=str(path),
            source_id=str(rid) if rid is not None else f"line {lineno}",
            extra={"line": lineno},
        ),
        metadata=extra | {"query_index": query},
        **_created(extra),
    )


def _created(extra: dict[str, Any]) -> dict[str, float]:
    """The record's own creation time (unix seconds) when it has one."""
    for key in ("created_at", "created", "timestamp"):
        value = extra.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return {"created_at": float(value)}
    return {}


# --- messages -------------------------------------------------------------------------------


def parse_messages(raw: list[Any]) -> list[Message]:
    """OpenAI-format message dicts -> `Message`s (legacy function calls become tool calls)."""
    out: list[Message] = []
    legacy: dict[str, str] = {}  # function name -> id of its latest legacy call
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise BadRecord("not a conversation (a message is not an object)")
        out.append(parse_message(m, i, legacy))
    if not any(m.role in ("user", "assistant") for m in out):
        raise BadRecord("not a conversation (no user or assistant message)")
    return out


def parse_message(m: dict[str, Any], index: int, legacy: dict[str, str] | None = None) -> Message:
    """One OpenAI-format message dict as a `Message`."""
    role = ROLES.get(str(m.get("role")))
    if role is None:
        raise BadRecord(f"unknown message role '{m.get('role')}'")
    legacy = legacy if legacy is not None else {}
    calls = tool_calls(m, index, legacy)
    call_id = m.get("tool_call_id")
    if m.get("role") == "function" and call_id is None:
        call_id = legacy.get(str(m.get("name")), f"call_{m.get('name')}")
    return Message(
        role=role,
        content=content(m.get("content")),
        name=m["name"] if isinstance(m.get("name"), str) else None,
        tool_calls=calls or None,
        tool_call_id=str(call_id) if call_id is not None else None,
        reasoning=reasoning(m),
    )


def content(value: Any) -> str | list[dict[str, Any]] | None:
    """Content as None, a string, or a list of part dicts (string parts become text parts)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [{"type": "text", "text": p} if isinstance(p, str) else p for p in value]
        if all(isinstance(p, dict) for p in parts):
            return parts
    raise BadRecord("bad message content (not null, a string or a list of parts)")


def reasoning(m: dict[str, Any]) -> str | None:
    """`reasoning_content` or `reasoning` as text (a list of parts is joined)."""
    for key in ("reasoning_content", "reasoning"):
        value = m.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list):
            text = "".join(p.get("text", "") for p in value if isinstance(p, dict))
            if text:
                return text
    return None


def tool_calls(m: dict[str, Any], index: int, legacy: dict[str, str]) -> list[ToolCall]:
    """The message's tool calls (OpenAI nested or flat form, plus a legacy `function_call`)."""
    raw = m.get("tool_calls") or []
    if not isinstance(raw, list):
        raise BadRecord("bad tool_calls (not a list)")
    calls = [tool_call(c, f"call_{index}_{k}") for k, c in enumerate(raw)]
    if isinstance(m.get("function_call"), dict):
        call = tool_call(m["function_call"], f"call_{index}_fn")
        legacy[call.function.name] = call.id
        calls.append(call)
    return calls


def tool_call(c: Any, default_id: str) -> ToolCall:
    if not isinstance(c, dict):
        raise BadRecord("bad tool call (not an object)")
    fn = c.get("function") if isinstance(c.get("function"), dict) else c
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise BadRecord("tool call without a function name")
    args = fn.get("arguments", fn.get("input"))
    if args is not None and not isinstance(args, str | dict):
        args = orjson.dumps(args).decode()  # a list or number: kept raw, counted malformed
    call_id = c.get("id") or c.get("call_id") or default_id
    return ToolCall(id=str(call_id), function=FunctionCall.parse(name, args))


def normalize_tools(raw: Any, stats: IngestStats | None = None) -> list[dict[str, Any]]:
    """Tool schemas in the OpenAI form; entries without a name are dropped (and counted)."""
    out: list[dict[str, Any]] = []
    for t in raw if isinstance(raw, list) else []:
        fn = t.get("function") if isinstance(t, dict) and "function" in t else t
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            if stats is not None:
                stats.read["tool schemas without a name (dropped)"] += 1
            continue
        keep = {k: fn[k] for k in ("name", "description", "parameters", "strict") if k in fn}
        out.append({"type": "function", "function": keep})
    return out


# --- summary fields ---------------------------------------------------------------------------


def last_index(messages: list[Message], role: str) -> int | None:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == role), None)


def final_answer(messages: list[Message]) -> str | None:
    """The last message's text when it is an assistant answer (no tool calls), else None."""
    last = messages[-1] if messages else None
    if last is None or last.role != "assistant" or last.tool_calls:
        return None
    return last.text if last.text.strip() else None


def agent_stats(messages: list[Message], tools: list[dict[str, Any]]) -> AgentStats:
    """Steps (assistant messages), tool calls by name, malformed and unknown calls."""
    offered = {t["function"]["name"] for t in tools}
    stats = AgentStats(steps=sum(m.role == "assistant" for m in messages))
    for m in messages:
        for c in m.tool_calls or ():
            stats.tool_calls += 1
            stats.by_tool[c.function.name] = stats.by_tool.get(c.function.name, 0) + 1
            stats.malformed_calls += not c.function.well_formed
            stats.unknown_tool_calls += bool(offered) and c.function.name not in offered
    return stats


def usage_of(raw: Any) -> Usage:
    """Token counts from an OpenAI (`prompt_tokens`) or Responses (`input_tokens`) usage."""
    if not isinstance(raw, dict):
        return Usage()
    prompt = raw.get("prompt_tokens", raw.get("input_tokens", 0))
    completion = raw.get("completion_tokens", raw.get("output_tokens", 0))
    ok = isinstance(prompt, int) and isinstance(completion, int)
    return Usage(prompt_tokens=prompt, completion_tokens=completion) if ok else Usage()
