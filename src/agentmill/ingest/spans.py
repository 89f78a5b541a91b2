"""The one span shape that Studio rows and OTLP spans are normalized into.

Studio stores attributes NESTED (it JSON-parses every string value and turns dotted keys
into objects: `gen_ai.input.messages` lives at `$.gen_ai.input.messages` as a real array);
OTLP carries them FLAT (dotted keys, values often JSON strings, old agentscope protocol
values JSON-quoted: `span.kind` = '"AGENT"'). `Span.get` reads one dotted key from either
shape and decodes JSON-encoded strings, so the rebuild never cares where a span came from.

>>> s = Span(trace_id="t", span_id="a", parent_id=None, name="x", start_ns=1, end_ns=2,
...          attributes={"gen_ai": {"operation": {"name": "chat"}}, "span.kind": '"LLM"'})
>>> s.get("gen_ai.operation.name"), s.get("span.kind"), s.get("missing", 0)
('chat', 'LLM', 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

Operation = Literal["invoke_agent", "chat", "execute_tool", "other"]
StatusCode = Literal["unset", "ok", "error"]

_MISSING = object()


@dataclass(slots=True)
class SpanEvent:
    """A span event or a log record joined to the span (event-based GenAI content)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    body: Any = None  # a log record's body, decoded from OTLP AnyValue


@dataclass(slots=True)
class Span:
    """One span, whatever store it came from.

    `parent_id` is None for a root ('' and NULL both normalize to None). `start_ns` may be
    rounded (Studio's decimal text went through a JS double): order by it, break ties by
    parent/child. `kind_hint` is the old Studio layout's `spanKind` (AGENT, LLM, TOOL, ...)
    or an operation name the store already extracted (Studio's `operationName` column).
    `origin` says where the span was read (file, table row / line number, layout) and goes
    into the provenance of every trajectory built from it.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int | None
    attributes: dict[str, Any]
    status: StatusCode = "unset"
    status_message: str = ""
    conversation_id: str | None = None
    events: list[SpanEvent] = field(default_factory=list)
    scope: str | None = None
    kind_hint: str | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    # True for attributes read from a Studio store: Studio already JSON-decoded every string
    # value once and nested every dotted key, so `get` walks the nesting and decodes nothing
    # more (a second decode would turn a tool's text result "[1, 2]" into a list).
    studio_form: bool = False

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute `key` (dotted), from flat or nested storage, JSON strings decoded."""
        if self.studio_form:  # nested_get, inlined: this is the ingest's innermost call
            node: Any = self.attributes
            for part in _KEY_PARTS.get(key) or _key_parts(key):
                if type(node) is not dict:
                    return default
                node = node.get(part, _MISSING)
                if node is _MISSING:
                    return default
            return node
        value = lookup(self.attributes, key)
        return default if value is _MISSING else decode_json_string(value)

    def raw(self, key: str, default: Any = None) -> Any:
        """The attribute `key` as stored (no JSON decoding)."""
        value = lookup(self.attributes, key)
        return default if value is _MISSING else value


_KEY_PARTS: dict[str, tuple[str, ...]] = {}


def _key_parts(key: str) -> tuple[str, ...]:
    parts = _KEY_PARTS[key] = tuple(key.split("."))
    return parts


def nested_get(attrs: dict[str, Any], key: str, default: Any = None) -> Any:
    """`key` in fully nested attributes (Studio's shape): one dict step per dotted part."""
    node: Any = attrs
    for part in _KEY_PARTS.get(key) or _key_parts(key):
        if type(node) is not dict:
            return default
        node = node.get(part, _MISSING)
        if node is _MISSING:
            return default
    return node


def lookup(attrs: dict[str, Any], key: str) -> Any:
    """Find a dotted key in a dict that may be flat, nested, or partly both
    (`{"gen_ai": {"usage.input_tokens": 3}}`); `_MISSING` when absent."""
    if key in attrs:
        return attrs[key]
    head, dot, rest = key.partition(".")
    while dot:
        sub = attrs.get(head)
        if isinstance(sub, dict):
            found = lookup(sub, rest)
            if found is not _MISSING:
                return found
        nxt, dot, rest = rest.partition(".")
        head = f"{head}.{nxt}"
    return _MISSING


def decode_json_string(value: Any) -> Any:
    """A string that holds JSON (an object, an array, or a quoted string) decoded once;
    anything else unchanged. Plain text such as a `Msg(...)` repr stays text."""
    if isinstance(value, str) and value[:1] in ("{", "[", '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


# --- what a span says, whatever protocol wrote it ------------------------------------------
# Keys are tried newest protocol first: OpenTelemetry GenAI (`gen_ai.*`, agentscope >= 1.0.9
# and 2.x), then agentscope's own copies (`agentscope.function.*`, also on spans Studio
# migrated or converted from the old protocol), then the old protocol (`input`, `output`,
# `metadata`, agentscope <= 1.0.8).

_AGENT_OPS = {"invoke_agent", "create_agent"}
_CHAT_OPS = {"chat", "text_completion", "generate_content"}
_OLD_KINDS = {"AGENT": "invoke_agent", "LLM": "chat", "TOOL": "execute_tool"}
# `kind_hint` values that settle the operation: the old layout's spanKind, or the
# gen_ai.operation.name a store already extracted (Studio's operationName column)
_HINTS: dict[str, Operation] = {
    **{k: "invoke_agent" for k in _AGENT_OPS},
    **{k: "chat" for k in _CHAT_OPS},
    "execute_tool": "execute_tool",
    **_OLD_KINDS,  # type: ignore[dict-item]
    **{k: "other" for k in ("format", "embeddings", "FORMATTER", "EMBEDDING")},
}


def operation(span: Span) -> Operation:
    """invoke_agent, chat, execute_tool or other, from `gen_ai.operation.name`, the old
    protocol's `span.kind`, the old Studio layout's spanKind, or the old span names."""
    hint = _HINTS.get(span.kind_hint) if span.kind_hint is not None else None
    if hint is not None:
        return hint
    op = span.get("gen_ai.operation.name")
    if op in _AGENT_OPS:
        return "invoke_agent"
    if op in _CHAT_OPS:
        return "chat"
    if op == "execute_tool":
        return "execute_tool"
    if op is None:
        kind = span.get("span.kind") or span.get("gen_ai.span.kind") or span.kind_hint
        found = _OLD_KINDS.get(str(kind).upper()) if kind is not None else None
        if found is not None:
            return found  # type: ignore[return-value]
        if span.name.endswith(".reply"):
            return "invoke_agent"
    return "other"


def function_io(span: Span, side: str) -> Any:
    """agentscope's captured call: `agentscope.function.input|output`, old `input|output`."""
    value = span.get(f"agentscope.function.{side}")
    if value is None or value == {}:
        value = span.get(side)
    return value


def call_args(span: Span) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) agentscope captured for the traced call."""
    value = function_io(span, "input")
    if not isinstance(value, dict):
        return [], {}
    args, kwargs = value.get("args"), value.get("kwargs")
    return (args if isinstance(args, list) else []), (kwargs if isinstance(kwargs, dict) else {})


def event_messages(span: Span, names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Provider-shape message dicts from events `gen_ai.<role>.message` / `gen_ai.choice`
    (log bodies joined to the span, or the event's own attributes)."""
    out = []
    for ev in span.events:
        if ev.name not in names:
            continue
        body = ev.body if ev.body is not None else _event_attrs(ev)
        if isinstance(body, str):
            body = {"content": body}
        if not isinstance(body, dict):
            continue
        if ev.name == "gen_ai.choice":
            inner = body.get("message")
            body = {"role": "assistant", **(inner if isinstance(inner, dict) else body)}
        elif "role" not in body:
            body = {"role": ev.name.split(".")[1], **body}
        if body.get("role") == "tool" and "tool_call_id" not in body:
            body = {**body, "tool_call_id": body.get("id")}
        out.append(body)
    return out


def event_attribute(span: Span, event_name: str, key: str) -> Any:
    """`key` from the first event named `event_name` that has it (attributes or body)."""
    for ev in span.events:
        if ev.name != event_name:
            continue
        value = decode_json_string(lookup(ev.attributes, key))
        if value is _MISSING and isinstance(ev.body, dict):
            value = decode_json_string(lookup(ev.body, key))
        if value is not _MISSING and value is not None:
            return value
    return None


def _event_attrs(ev: SpanEvent) -> dict[str, Any]:
    content = decode_json_string(lookup(ev.attributes, "gen_ai.event.content"))
    if isinstance(content, dict):
        return content
    return {k: decode_json_string(v) for k, v in ev.attributes.items()}


def indexed(span: Span, prefix: str) -> list[dict[str, Any]]:
    """Flattened rows `<prefix>.N.role/content/tool_calls.M.*/tool_call_id`, N = 0, 1, ...
    (OpenLLMetry style), as provider-shape message dicts."""
    rows = []
    for n in range(10_000):
        role, content = span.get(f"{prefix}.{n}.role"), span.get(f"{prefix}.{n}.content")
        if role is None and content is None:
            break
        row: dict[str, Any] = {"role": role or "assistant", "content": content}
        calls = _indexed_calls(span, f"{prefix}.{n}.tool_calls")
        if calls:
            row["tool_calls"] = calls
        call_id = span.get(f"{prefix}.{n}.tool_call_id")
        if call_id is not None:
            row["tool_call_id"] = call_id
        rows.append(row)
    return rows


def _indexed_calls(span: Span, prefix: str) -> list[dict[str, Any]]:
    calls = []
    for m in range(10_000):
        name = span.get(f"{prefix}.{m}.name")
        if name is None:
            break
        fn = {"name": name, "arguments": span.get(f"{prefix}.{m}.arguments")}
        calls.append({"id": span.get(f"{prefix}.{m}.id"), "function": fn})
    return calls


# --- the span tree and its turns -----------------------------------------------------------

_STEP_OPS = ("chat", "execute_tool")


@dataclass(slots=True)
class Turn:
    """One user turn: a top-level agent span and its own chat/tool spans, in time order."""

    agent: Span
    steps: list[Span] = field(default_factory=list)
    ops: list[str] = field(default_factory=list)  # "chat" | "execute_tool", per step


_NESTED = Turn(agent=None)  # type: ignore[arg-type]  # marks spans under a nested agent


def find_turns(spans: list[Span]) -> tuple[list[Turn], int, int]:
    """(turns in time order, chat/tool spans outside any turn, spans whose parent is missing).

    A tree per trace from the parent ids; a span whose parent is missing becomes a root (its
    origin records the missing id). Siblings are ordered by start time, ties by end time (the
    stored times may be rounded), parents always before their children. A turn is an agent
    span with no agent ancestor; spans below an agent it called are not its steps.
    """
    roots, children, orphans = _forest(spans)
    turns: list[Turn] = []
    outside = 0
    stack: list[tuple[Span, Turn | None]] = [(s, None) for s in reversed(roots)]
    while stack:
        span, turn = stack.pop()
        op = operation(span)
        if op == "invoke_agent":
            if turn is None:
                turn = Turn(span)
                turns.append(turn)
            else:
                turn = _NESTED
        elif op in _STEP_OPS:
            if turn is None:
                outside += 1
            elif turn is not _NESTED:
                turn.steps.append(span)
                turn.ops.append(op)
        kids = children.get((span.trace_id, span.span_id))
        if kids:
            stack.extend((k, turn) for k in reversed(kids))
    return turns, outside, orphans


def _forest(spans: list[Span]) -> tuple[list[Span], dict[tuple[str, str], list[Span]], int]:
    ids = {(s.trace_id, s.span_id) for s in spans}
    roots: list[Span] = []
    children: dict[tuple[str, str], list[Span]] = {}
    orphans = 0
    for s in spans:
        if s.parent_id is None:
            roots.append(s)
        elif (s.trace_id, s.parent_id) in ids:
            children.setdefault((s.trace_id, s.parent_id), []).append(s)
        else:
            roots.append(s)
            orphans += 1
            s.origin = {**s.origin, "missing_parent": s.parent_id}
    roots.sort(key=_order)
    for kids in children.values():
        kids.sort(key=_order)
    return roots, children, orphans


def _order(s: Span) -> tuple[int, int, str]:
    return (s.start_ns, s.end_ns if s.end_ns is not None else s.start_ns, s.span_id)
