"""OpenTelemetry GenAI traces (OTLP/JSON files, optional OTLP logs) -> trajectories.

    read_traces("otel", Path("traces.jsonl"), IngestOptions(logs=Path("logs.jsonl")))
    # in a run config: sources: [{type: traces, format: otel, path: ..., logs: ...}]

Spans are decoded and spooled to a temporary SQLite file (`otlp.py`), read back one
conversation at a time, normalized to the standard GenAI attribute shape (`normalize`), and
handed to the one `rebuild`, the same that rebuilds AgentScope Studio files.

Conversation = `gen_ai.conversation.id` (JSON-quoted in raw agentscope 1.x spans), else the
old agentscope protocol's `project.run_id`, else one found on another span of the same trace,
else the trace id; agentscope 2.x's "[no_session_id]" names none. Log records (`opts.logs`) join
their span by (trace id, span id) as `SpanEvent`s.

What `normalize` rewrites, so the rebuild sees one shape (it never overwrites a key the span
already has):
- content carried by events (span events or joined log records): `gen_ai.{system,user,
  assistant,tool}.message` and `gen_ai.choice` bodies, `gen_ai.content.prompt/completion`,
  and `gen_ai.client.inference.operation.details` -> `gen_ai.input.messages` /
  `gen_ai.output.messages` (parts form), `gen_ai.system_instructions`, `gen_ai.tool.definitions`;
  message events that carry no content (content capture off) are dropped, so the span counts
  as one with no captured input instead of one with an empty prompt;
- flattened `gen_ai.prompt.N.*` / `gen_ai.completion.N.*` (OpenLLMetry) -> the same, and
  `llm.request.functions.N.*` -> `gen_ai.tool.definitions`; such spans get
  `gen_ai.operation.name` = chat when they name no operation;
- legacy keys: `gen_ai.system` -> `gen_ai.provider.name`, `gen_ai.usage.prompt_tokens` /
  `completion_tokens` -> `gen_ai.usage.input_tokens` / `output_tokens`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentmill.errors import UserError
from agentmill.ingest import otlp
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.spans import Span, SpanEvent, decode_json_string
from agentmill.records import Trajectory

SOURCE = "otel"
_NO_CONVERSATION = {"", "[no_session_id]", "unknown"}
_RENAMED = {
    "gen_ai.system": "gen_ai.provider.name",
    "gen_ai.usage.prompt_tokens": "gen_ai.usage.input_tokens",
    "gen_ai.usage.completion_tokens": "gen_ai.usage.output_tokens",
}
_DETAIL_KEYS = (
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
    "gen_ai.tool.definitions",
)
_FLAT_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.", "llm.request.functions.")
_ROLE_EVENTS = {f"gen_ai.{r}.message": r for r in ("system", "user", "assistant", "tool")}


def read(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[Trajectory]:
    """Trajectories from an OTLP/JSON traces file (and `opts.logs`, an OTLP/JSON logs file).

    Bad lines and spans are counted skips (`invalid_json`, `bad_span`, ...); an empty file, or
    one that is not OTLP/JSON traces, is a UserError.
    """
    from agentmill.ingest.rebuild import rebuild

    for spans in read_spans(path, opts, stats):
        yield from rebuild(spans, stats, opts, SOURCE)


def read_spans(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[list[Span]]:
    """The normalized spans of each conversation, one list at a time (what `read` rebuilds)."""
    if opts.logs is not None and not Path(opts.logs).is_file():
        raise UserError(f"logs file not found: {opts.logs}; pass an OTLP/JSON logs file")
    with otlp.Spool() as spool:
        load_spans(path, spool, stats, opts.strict)
        if opts.logs is not None:
            load_logs(Path(opts.logs), spool, stats, opts.strict)
        spool.finish(stats)
        for conv, rows in spool.conversations():
            if opts.runs and conv not in opts.runs:
                continue
            stats.read["conversations"] += 1
            yield [normalize(to_span(span, logs, conv)) for span, logs in rows]


def load_spans(path: Path, spool: otlp.Spool, stats: IngestStats, strict: bool) -> None:
    """Decode every span of the traces file into the spool, one export request at a time."""
    for lineno, doc in otlp.iter_documents(path, "traces", stats, strict):
        rows = []
        for raw, resource, scope in otlp.iter_spans(doc):
            try:
                span = otlp.decode_span(raw, resource, scope)
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                stats.skip("bad_span", f"{path}:{lineno}: {e}", strict)
                continue
            span["origin"] = {"file": str(path), "line": lineno, "format": "otlp-json"}
            rows.append(span)
        stats.read["spans"] += len(rows)
        duplicates = spool.add_spans(rows, _conversation_of_span)
        if duplicates:
            stats.read["duplicate_spans"] += duplicates


def load_logs(path: Path, spool: otlp.Spool, stats: IngestStats, strict: bool) -> None:
    """Decode every log record of the logs file into the spool."""
    for lineno, doc in otlp.iter_documents(path, "logs", stats, strict):
        rows = []
        for raw in otlp.iter_log_records(doc):
            try:
                rows.append(otlp.decode_log_record(raw))
            except (ValueError, TypeError, AttributeError, KeyError) as e:
                stats.skip("bad_log_record", f"{path}:{lineno}: {e}", strict)
        stats.read["log_records"] += len(rows)
        spool.add_logs(rows)


def conversation_of(attributes: dict[str, Any]) -> str | None:
    """The conversation a span names itself (JSON quotes removed); None when none.

    >>> conversation_of({"gen_ai.conversation.id": '"run-1"'}), conversation_of({})
    ('run-1', None)
    """
    for key in ("gen_ai.conversation.id", "project.run_id"):
        value = decode_json_string(attributes.get(key))
        if value is not None and str(value) not in _NO_CONVERSATION:
            return str(value)
    return None


def _conversation_of_span(span: dict[str, Any]) -> str | None:
    return conversation_of(span["attributes"])


def to_span(d: dict[str, Any], logs: list[dict[str, Any]], conv: str) -> Span:
    """A spooled span and its log records as a `Span` (events in time order)."""
    origin = {**d["origin"], "scope_version": d["scope_version"], "service": d["service"]}
    kind = decode_json_string(d["attributes"].get("span.kind"))  # old agentscope protocol
    events = [SpanEvent(**e) for e in d["events"]] + [_log_event(r) for r in logs]
    return Span(
        trace_id=d["trace_id"],
        span_id=d["span_id"],
        parent_id=d["parent_id"],
        name=d["name"],
        start_ns=d["start_ns"],
        end_ns=d["end_ns"],
        attributes=d["attributes"],
        status=d["status"],
        status_message=d["status_message"],
        conversation_id=conv,
        events=sorted(events, key=lambda e: e.time_ns),
        scope=d["scope"],
        kind_hint=kind if isinstance(kind, str) else None,
        origin={k: v for k, v in origin.items() if v is not None},
    )


def _log_event(rec: dict[str, Any]) -> SpanEvent:
    return SpanEvent(rec["name"], rec["time_ns"], rec["attributes"], rec["body"])


# --- normalization to the standard GenAI shape ------------------------------------------


def normalize(span: Span) -> Span:
    """Rewrite older GenAI shapes into standard attributes (see the module docstring)."""
    attrs = span.attributes
    for old, new in _RENAMED.items():
        if old in attrs and new not in attrs:
            attrs[new] = attrs[old]
    _from_events(span)
    flattened = _from_flattened(attrs)
    if flattened and "gen_ai.operation.name" not in attrs:
        attrs["gen_ai.operation.name"] = "chat"
    return span


def _from_events(span: Span) -> None:
    attrs, inputs, outputs = span.attributes, [], []
    for ev in span.events:
        payload = _event_payload(ev)
        if ev.name == "gen_ai.client.inference.operation.details":
            for key in _DETAIL_KEYS:
                _set_default(attrs, key, ev.attributes.get(key, payload.get(key)))
        elif ev.name in _ROLE_EVENTS:
            inputs.append(_message(payload.get("role") or _ROLE_EVENTS[ev.name], payload))
        elif ev.name == "gen_ai.choice":
            outputs.append(_choice(payload))
        elif ev.name == "gen_ai.content.prompt":
            inputs.extend(_message(m.get("role"), m) for m in _json_list(ev, "gen_ai.prompt"))
        elif ev.name == "gen_ai.content.completion":
            outputs.extend(_choice(m) for m in _json_list(ev, "gen_ai.completion"))
    if any(m["parts"] for m in inputs):
        _set_default(attrs, "gen_ai.input.messages", inputs)
    elif inputs:  # content capture was off: the events say nothing, and are no input
        _drop_events(span, set(_ROLE_EVENTS))
    if any(m["parts"] for m in outputs):
        _set_default(attrs, "gen_ai.output.messages", outputs)
    elif outputs:
        _drop_events(span, {"gen_ai.choice"})


def _drop_events(span: Span, names: set[str]) -> None:
    """Drop content-less message events so no reader mistakes them for an (empty) prompt
    or completion; how many is kept in `span.origin`."""
    kept = [ev for ev in span.events if ev.name not in names]
    dropped = len(span.events) - len(kept)
    span.origin["events_without_content"] = span.origin.get("events_without_content", 0) + dropped
    span.events = kept


def _set_default(attrs: dict[str, Any], key: str, value: Any) -> None:
    if value is not None and key not in attrs:
        attrs[key] = value


def _event_payload(ev: SpanEvent) -> dict[str, Any]:
    """The event's content: a log body, else the JSON in `gen_ai.event.content` (Azure SDKs),
    else the event's own attributes (span events of older instrumentations)."""
    body = ev.body
    if body is None:
        body = decode_json_string(ev.attributes.get("gen_ai.event.content"))
    if body is None:
        body = ev.attributes
    if isinstance(body, str):  # a bare string body is the message text
        body = {"content": body}
    return body if isinstance(body, dict) else {}


def _json_list(ev: SpanEvent, key: str) -> list[dict[str, Any]]:
    value = decode_json_string(ev.attributes.get(key))
    return [m for m in value if isinstance(m, dict)] if isinstance(value, list) else []


def _choice(body: dict[str, Any]) -> dict[str, Any]:
    """A `gen_ai.choice` body ({index, finish_reason, message}) as an output message."""
    message = body.get("message") if isinstance(body.get("message"), dict) else body
    out = _message(message.get("role") or "assistant", message)
    out["finish_reason"] = body.get("finish_reason") or "stop"
    return out


def _message(role: str | None, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-style / event-body message as a GenAI parts-form message."""
    role = role or "user"
    if role == "tool":
        call_id = body.get("id") or body.get("tool_call_id")
        response = decode_json_string(body.get("content"))
        parts = [{"type": "tool_call_response", "id": call_id, "response": response}]
        return {"role": "tool", "parts": parts if "content" in body else []}
    parts = _content_parts(body.get("content"))
    parts += [_tool_call_part(tc) for tc in _as_list(body.get("tool_calls"))]
    if isinstance(body.get("function_call"), dict):  # the pre-tools OpenAI API
        parts.append(_tool_call_part({"function": body["function_call"]}))
    out: dict[str, Any] = {"role": role, "parts": parts}
    if body.get("name"):
        out["name"] = body["name"]
    return out


def _content_parts(content: Any) -> list[dict[str, Any]]:
    content = _decode_parts_string(content)
    if content is None or content == "":
        return []
    if not isinstance(content, list):
        return [{"type": "text", "content": content if isinstance(content, str) else str(content)}]
    parts = []
    for item in content:
        if isinstance(item, str):
            parts.append({"type": "text", "content": item})
        elif isinstance(item, dict) and item.get("type") in ("text", "input_text", "output_text"):
            parts.append({"type": "text", "content": item.get("text", item.get("content", ""))})
        elif isinstance(item, dict):
            parts.append(item)  # images and other parts pass through as they are
    return parts


def _decode_parts_string(content: Any) -> Any:
    """OpenLLMetry writes list content as a JSON string: decode it only when it is a list of
    typed parts, so a user's text that happens to be JSON stays text."""
    value = decode_json_string(content) if isinstance(content, str) else content
    if (
        isinstance(value, list)
        and value
        and all(isinstance(p, dict) and "type" in p for p in value)
    ):
        return value
    return content


def _tool_call_part(call: Any) -> dict[str, Any]:
    call = call if isinstance(call, dict) else {}
    fn = call.get("function") if isinstance(call.get("function"), dict) else call
    arguments = fn.get("arguments")
    decoded = decode_json_string(arguments)
    if isinstance(decoded, dict):
        arguments = decoded
    return {
        "type": "tool_call",
        "id": call.get("id"),
        "name": fn.get("name"),
        "arguments": arguments,
    }


def _as_list(value: Any) -> list[Any]:
    value = decode_json_string(value)
    return value if isinstance(value, list) else []


def _from_flattened(attrs: dict[str, Any]) -> bool:
    """OpenLLMetry's `gen_ai.prompt.N.*`, `gen_ai.completion.N.*` and
    `llm.request.functions.N.*` as standard attributes; True when the span had any."""
    if not any(key.startswith(_FLAT_PREFIXES) for key in attrs):
        return False
    prompt = _indexed(attrs, "gen_ai.prompt.")
    completion = _indexed(attrs, "gen_ai.completion.")
    functions = _indexed(attrs, "llm.request.functions.")
    if prompt:
        messages = [_message(row.get("role"), _flat_body(row)) for row in prompt]
        _set_default(attrs, "gen_ai.input.messages", messages)
    if completion:
        _set_default(attrs, "gen_ai.output.messages", [_flat_choice(r) for r in completion])
    if functions:
        _set_default(attrs, "gen_ai.tool.definitions", [_flat_tool(r) for r in functions])
    return bool(prompt or completion)


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Attributes `<prefix>N.a.b` as rows, in N order: [{"a": {"b": value}}, ...]."""
    rows: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, rest = key[len(prefix) :].partition(".")
        if index.isdigit() and rest:
            node = rows.setdefault(int(index), {})
            *path, leaf = rest.split(".")
            for step in path:
                node = node.setdefault(step, {})
            if isinstance(node, dict):
                node[leaf] = value
    return [rows[i] for i in sorted(rows)]


def _flat_body(row: dict[str, Any]) -> dict[str, Any]:
    """A flattened message row: `tool_calls` is {"0": {...}} there, a list here."""
    calls = row.get("tool_calls")
    if isinstance(calls, dict):
        ordered = sorted(calls.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0)
        row = {**row, "tool_calls": [c for _, c in ordered]}
    return row


def _flat_choice(row: dict[str, Any]) -> dict[str, Any]:
    out = _message(row.get("role") or "assistant", _flat_body(row))
    out["finish_reason"] = row.get("finish_reason") or "stop"
    return out


def _flat_tool(row: dict[str, Any]) -> dict[str, Any]:
    tool = {"type": "function", "name": row.get("name"), "description": row.get("description")}
    tool["parameters"] = decode_json_string(row.get("parameters")) or {}
    return tool
