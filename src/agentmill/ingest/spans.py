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
    parent/child. `kind_hint` is the old Studio layout's `spanKind` (AGENT, LLM, TOOL, ...).
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

    def get(self, key: str, default: Any = None) -> Any:
        """The attribute `key` (dotted), from flat or nested storage, JSON strings decoded."""
        value = lookup(self.attributes, key)
        return default if value is _MISSING else decode_json_string(value)

    def raw(self, key: str, default: Any = None) -> Any:
        """The attribute `key` as stored (no JSON decoding)."""
        value = lookup(self.attributes, key)
        return default if value is _MISSING else value


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
    if isinstance(value, str) and value[:1] in ('{', '[', '"'):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value
