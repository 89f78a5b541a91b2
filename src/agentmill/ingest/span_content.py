"""What one agent, chat or tool span says, as OpenAI-shape message dicts.

Each reader tries the shapes newest first and returns None when the span captured nothing
(content capture off, agentscope 2.0.0-2.0.6 chat spans): the rebuild counts that, it never
guesses. Repr strings (`Msg(...)`, `ToolResponse(...)`) are parsed only when no structured
copy of the same content exists, because parsing one costs far more than reading JSON.
"""

from __future__ import annotations

from typing import Any

from agentmill.ingest import span_messages as sm
from agentmill.ingest.pyrepr import parse_repr
from agentmill.ingest.spans import (
    Span,
    call_args,
    event_attribute,
    event_messages,
    function_io,
    indexed,
)

_PROMPT_EVENTS = ("gen_ai.system.message", "gen_ai.user.message", "gen_ai.assistant.message")
_PROMPT_EVENTS += ("gen_ai.tool.message",)
_DETAILS = "gen_ai.client.inference.operation.details"
_ERROR_STATES = {"error", "denied", "interrupted"}
_USAGE_KEYS = ("input_tokens", "prompt_tokens", "output_tokens", "completion_tokens")


class Unparseable(ValueError):
    """A repr string that `pyrepr` could not read (counted by the caller)."""


def agent_input(span: Span) -> list[sm.Msg] | None:
    """The messages the agent was invoked with (None when the span has none)."""
    value = span.get("gen_ai.input.messages")
    if value:
        return sm.from_any(value)
    args, kwargs = call_args(span)
    msg = kwargs.get("msg", args[0] if args else None)
    if msg:
        return _repr_messages(msg, "user")
    return None


def agent_output(span: Span) -> list[sm.Msg] | None:
    """The agent's reply message(s) (None when the span has none, e.g. it failed)."""
    value = span.get("gen_ai.output.messages")
    if value:
        return sm.from_any(value)
    value = function_io(span, "output")
    if value:
        return _repr_messages(value, "assistant")
    return None


def _repr_messages(value: Any, role: str) -> list[sm.Msg]:
    """agentscope's captured Msg(s): repr strings (parsed), dicts, or plain text (`role`)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, str) and item.startswith("Msg("):
            parsed = parse_repr(item)
            if parsed is None:
                raise Unparseable(item[:80])
            out.extend(
                sm.from_blocks(parsed.get("role"), parsed.get("content"), parsed.get("name"))
            )
        elif isinstance(item, dict):
            out.extend(sm.from_any(item))
        elif isinstance(item, str):
            out.append(sm.message(role, item))
    return out


def chat_prompt(span: Span) -> list[sm.Msg] | None:
    """The full prompt of an LLM call (None when it was not captured)."""
    raw = chat_prompt_raw(span)
    return None if raw is None else sm.from_any(raw)


def chat_prompt_raw(span: Span) -> list[Any] | None:
    """The prompt as captured (items in any message shape, for `span_messages.from_any`),
    with `gen_ai.system_instructions` as a first system item; None when not captured."""
    args, kwargs = call_args(span)
    prompt = args[0] if args and isinstance(args[0], list) else kwargs.get("messages")
    if isinstance(prompt, list) and prompt:
        return prompt
    messages = span.get("gen_ai.input.messages") or event_attribute(
        span, _DETAILS, "gen_ai.input.messages"
    )
    if not messages:
        messages = indexed(span, "gen_ai.prompt") or event_messages(span, _PROMPT_EVENTS)
    if not messages:
        return None
    messages = messages if isinstance(messages, list) else [messages]
    system = span.get("gen_ai.system_instructions") or event_attribute(
        span, _DETAILS, "gen_ai.system_instructions"
    )
    if system and not (isinstance(messages[0], dict) and messages[0].get("role") == "system"):
        return [_system_message(system), *messages]
    return messages


def _system_message(value: Any) -> sm.Msg:
    if isinstance(value, list):
        texts = [p.get("content", "") for p in value if isinstance(p, dict)]
        value = "\n".join(t if isinstance(t, str) else str(t) for t in texts)
    return sm.message("system", value if isinstance(value, str) else str(value))


def has_prompt(span: Span) -> bool:
    """Whether an LLM span captured its prompt anywhere (cheap: nothing is converted)."""
    if span.get("gen_ai.input.messages"):  # the common case first: the checks are pure
        return True
    args, kwargs = call_args(span)
    if (args and isinstance(args[0], list) and args[0]) or kwargs.get("messages"):
        return True
    if span.get("gen_ai.prompt.0.role") is not None:
        return True
    names = {_DETAILS, *_PROMPT_EVENTS}
    return any(ev.name in names for ev in span.events)


def chat_completion(span: Span, with_usage: bool = True) -> sm.Msg | None:
    """The assistant message an LLM call produced (None when not captured or it failed)."""
    value = span.get("gen_ai.output.messages") or event_attribute(
        span, _DETAILS, "gen_ai.output.messages"
    )
    msgs = sm.from_any(value) if value else []
    if not msgs:
        output = function_io(span, "output")
        if isinstance(output, dict) and isinstance(output.get("content"), list):
            msgs = sm.from_blocks("assistant", output["content"])
    if not msgs:
        rows = indexed(span, "gen_ai.completion") or event_messages(span, ("gen_ai.choice",))
        msgs = sm.from_any(rows[:1])
    assistant = [m for m in msgs if m["role"] == "assistant"]
    if not assistant:
        return None
    out = assistant[0]
    found = chat_usage(span) if with_usage else None
    if found is not None:
        out["usage"] = found
    return out


def chat_usage(span: Span) -> dict[str, int] | None:
    """Token counts: `gen_ai.usage.*` (and the legacy prompt/completion names), else the
    ChatResponse's own `usage` (old protocol)."""
    found = span.get("gen_ai.usage") if span.studio_form else None
    if not isinstance(found, dict):
        found = {k: span.get(f"gen_ai.usage.{k}") for k in _USAGE_KEYS}
    prompt = _first(found.get("input_tokens"), found.get("prompt_tokens"))
    completion = _first(found.get("output_tokens"), found.get("completion_tokens"))
    if prompt is None and completion is None:
        output = function_io(span, "output")
        found = output.get("usage") if isinstance(output, dict) else None
        if isinstance(found, dict):
            prompt, completion = found.get("input_tokens"), found.get("output_tokens")
    return sm.usage(prompt, completion)


def _first(a: Any, b: Any) -> Any:
    return a if a is not None else b


def chat_tools(span: Span) -> list[dict[str, Any]]:
    """The tool schemas offered to the model, OpenAI-style."""
    return tool_definitions(chat_tools_raw(span))


def chat_tools_raw(span: Span) -> Any:
    """The tool schemas as captured (flat GenAI list or OpenAI-style), None when none."""
    value = span.get("gen_ai.tool.definitions") or event_attribute(
        span, _DETAILS, "gen_ai.tool.definitions"
    )
    return value or call_args(span)[1].get("tools")


def chat_provider(span: Span) -> str | None:
    """`gen_ai.provider.name`, or its older name `gen_ai.system`."""
    value = span.get("gen_ai.provider.name") or span.get("gen_ai.system")
    return value if isinstance(value, str) and value else None


def chat_model(span: Span) -> str | None:
    for key in ("gen_ai.response.model", "gen_ai.request.model", "metadata.model_name"):
        value = span.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def tool_call_of(span: Span) -> dict[str, Any]:
    """The tool call a tool span executed, as an OpenAI tool call."""
    tool = span.get("gen_ai.tool") if span.studio_form else None
    if isinstance(tool, dict) and isinstance(tool.get("call"), dict) and "id" in tool["call"]:
        call_id, name, arguments = (
            tool["call"]["id"],
            tool.get("name"),
            tool["call"].get("arguments"),
        )
    else:
        call_id, name = span.get("gen_ai.tool.call.id"), span.get("gen_ai.tool.name")
        arguments = span.get("gen_ai.tool.call.arguments")
    if call_id is None or name is None or arguments is None:
        call = function_io(span, "input")
        call = call.get("tool_call", call) if isinstance(call, dict) else {}
        call = call if isinstance(call, dict) else {}
        call_id = call_id or call.get("id") or span.get("metadata.id")
        name = name or call.get("name") or span.get("metadata.name")
        arguments = call.get("input") if arguments is None else arguments
    return sm.tool_call(call_id or f"call_{span.span_id}", name, arguments)


def tool_result(span: Span) -> tuple[str, bool]:
    """The text the model got back from a tool span, and whether the tool failed (span status
    error, or an agentscope 2.x result in an error/denied/interrupted state)."""
    value = span.get("gen_ai.tool.call.result")
    if value is None:
        value = function_io(span, "output")
        value = None if value == {} else value
    failed = span.status == "error"
    if isinstance(value, str) and value.startswith(("ToolResponse(", "ToolChunk(")):
        parsed = parse_repr(value)
        if parsed is None:
            raise Unparseable(value[:80])
        value = parsed
    if isinstance(value, dict) and str(value.get("state", "")).lower() in _ERROR_STATES:
        failed = True
    text = sm.tool_output_text(value) if value is not None else ""
    if failed and not text:
        text = span.status_message or _exception_message(span) or "error"
    return text, failed


def tool_failed_cheap(span: Span) -> bool:
    """Whether a tool span failed, parsing a repr only when it carries a state (2.x)."""
    if span.status == "error":
        return True
    value = span.get("gen_ai.tool.call.result")
    if isinstance(value, dict):
        return str(value.get("state", "")).lower() in _ERROR_STATES
    if isinstance(value, str) and "state=" in value:
        return tool_result(span)[1]
    return False


def _exception_message(span: Span) -> str | None:
    for ev in span.events:
        if ev.name == "exception":
            message = ev.attributes.get("exception.message") or ev.attributes.get("exception")
            if isinstance(message, dict):
                message = message.get("message")
            if message:
                return str(message)
    return None


def tool_definitions(value: Any) -> list[dict[str, Any]]:
    """Tool schemas (flat GenAI `[{type, name, description, parameters}]` or OpenAI nested)
    as `{"type": "function", "function": {name, description, parameters}}`."""
    out = []
    for tool in value if isinstance(value, list) else []:
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        if not fn.get("name"):
            continue
        spec = {"name": fn["name"], "description": fn.get("description") or ""}
        spec["parameters"] = fn.get("parameters") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": spec})
    return out
