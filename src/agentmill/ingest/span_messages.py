"""Message shapes found in spans -> agentmill's OpenAI-shape message dicts.

Spans carry messages in four shapes, all turned into plain dicts of the `records.Message`
shape (validated once, when the trajectory is built):

- OpenTelemetry GenAI parts: `{role, parts: [{type: text, content}, {type: tool_call, id, name,
  arguments}, {type: tool_call_response, id, response}, {type: reasoning, content}, ...]}`;
- provider request messages (OpenAI, DashScope `{text}` parts, Anthropic tool blocks);
- agentscope content blocks (`Msg.content`, `ChatResponse.content`): `{type: text, text}`,
  `{type: thinking}`, `{type: tool_use, id, name, input}`, `{type: tool_result, id, output}`;
- agentscope `Msg(...)` / `ToolResponse(...)` repr strings (via `pyrepr`).

A tool result inside a user/system message becomes its own `tool` message, as OpenAI expects.

>>> from_any([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}])
[{'role': 'user', 'content': 'hi'}]
>>> from_blocks("assistant", [{"type": "tool_use", "id": "c1", "name": "add", "input": {"a": 1}}])
[{'role': 'assistant', 'content': None, 'tool_calls': [{'id': 'c1', 'type': 'function', \
'function': {'name': 'add', 'arguments': {'a': 1}}}]}]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from agentmill.ingest.pyrepr import parse_repr

Msg = dict[str, Any]

_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "model": "assistant",
    "ai": "assistant",
    "tool": "tool",
    "function": "tool",
}
_MEDIA = ("image", "audio", "video")


def message(role: str, content: Any = None, **extra: Any) -> Msg:
    """A message dict; `extra` keys whose value is None or empty are left out."""
    out: Msg = {"role": role, "content": content}
    for key, value in extra.items():
        if value is not None and value != []:
            out[key] = value
    return out


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call; `arguments` a dict, a JSON text, or anything else (kept raw)."""
    fn: dict[str, Any] = {"name": str(name or "")}
    if isinstance(arguments, str):
        try:
            parsed = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            parsed = None
        arguments = parsed if isinstance(parsed, dict) else arguments
    if isinstance(arguments, dict):
        fn["arguments"] = arguments
    elif arguments is None:
        fn["arguments"] = {}
    else:
        fn["raw_arguments"] = arguments if isinstance(arguments, str) else _dumps(arguments)
    return {"id": str(call_id or ""), "type": "function", "function": fn}


def usage(prompt_tokens: Any, completion_tokens: Any) -> dict[str, int] | None:
    """A usage dict, or None when neither count is known."""
    if prompt_tokens is None and completion_tokens is None:
        return None
    return {"prompt_tokens": _int(prompt_tokens), "completion_tokens": _int(completion_tokens)}


def role_of(value: Any, default: str = "user") -> str:
    found = _ROLES.get(value) if type(value) is str else None
    if found is None and value is not None:
        found = _ROLES.get(str(value).lower())
    return found or default


def text_of(content: Any) -> str:
    """Plain text of a message content (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def content_of(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]] | None:
    """One text part -> its string; no parts -> None; otherwise the parts, exactly."""
    if not parts:
        return None
    if len(parts) == 1 and parts[0].get("type") == "text":
        return parts[0]["text"]
    return parts


def from_any(value: Any) -> list[Msg]:
    """Messages from a list (or one) of parts-form, provider-form or agentscope Msg items."""
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        return from_item(value)
    out: list[Msg] = []
    for item in value:
        out.extend(from_item(item))
    return out


def from_item(item: Any) -> list[Msg]:
    """The message(s) of one item, whatever its shape ([] for what is not a message)."""
    if type(item) is dict:
        return from_parts(item) if "parts" in item else from_provider(item)
    if isinstance(item, str) and item.startswith("Msg("):
        item = parse_repr(item)
    if not isinstance(item, dict):
        return []
    if getattr(item, "type_name", "") == "Msg":
        return from_blocks(item.get("role"), item.get("content"), item.get("name"))
    return from_parts(item) if "parts" in item else from_provider(item)


def from_parts(item: dict[str, Any]) -> list[Msg]:
    """One OpenTelemetry GenAI parts-form message (plus any tool results it carries)."""
    role = role_of(item.get("role"))
    given = item.get("parts") or []
    if len(given) == 1 and type(given[0]) is dict and given[0].get("type") == "text":
        out = {"role": role, "content": _str(given[0].get("content"))}
        name = _name(role, item.get("name"))
        return [out if name is None else {**out, "name": name}]
    return _assemble(role, item.get("name"), (_part_item(p) for p in given if isinstance(p, dict)))


def _part_item(p: dict[str, Any]) -> tuple[str, Any]:
    kind = p.get("type")
    if kind == "text":
        return "part", {"type": "text", "text": _str(p.get("content"))}
    if kind == "reasoning":
        return "reasoning", _str(p.get("content"))
    if kind == "tool_call":
        return "call", tool_call(p.get("id"), p.get("name"), p.get("arguments"))
    if kind == "tool_call_response":
        text = response_text(p.get("response"))
        return "result", {"role": "tool", "content": text, "tool_call_id": _id(p.get("id"))}
    return "part", _media_part(p)


def from_provider(item: dict[str, Any]) -> list[Msg]:
    """One provider request message: OpenAI (also DashScope `{text}` parts, Anthropic blocks)."""
    role = role_of(item.get("role"))
    content = item.get("content")
    if role == "tool":
        text = tool_output_text(content) if isinstance(content, list) else _str(content)
        return [{"role": "tool", "content": text, "tool_call_id": _id(item.get("tool_call_id"))}]
    calls = item.get("tool_calls")
    calls = [_openai_call(c) for c in calls if isinstance(c, dict)] if calls else []
    reasoning = [item["reasoning_content"]] if item.get("reasoning_content") else []
    if isinstance(content, list):
        text = _only_text(content)
        if text is _NOT_TEXT:
            return _provider_blocks(role, content, item.get("name"), calls, reasoning)
        content = text
    elif content is not None and not isinstance(content, str):
        content = _str(content)
    out = {"role": role, "content": content}
    name = _name(role, item.get("name"))
    if name is not None:
        out["name"] = name
    return [_merge(out, calls, reasoning)]


_NOT_TEXT = object()


def _only_text(content: list[Any]) -> Any:
    """The content value of a list of text parts (one -> its string, none -> None), or
    _NOT_TEXT when it holds anything else (the common case made cheap)."""
    if len(content) == 1:
        p = content[0]
        if type(p) is dict and p.get("type", "text") == "text" and isinstance(p.get("text"), str):
            return p["text"]
        return _NOT_TEXT
    for p in content:
        if type(p) is not dict or p.get("type", "text") != "text" or "text" not in p:
            return _NOT_TEXT
    return [{"type": "text", "text": _str(p["text"])} for p in content] or None


def _provider_blocks(
    role: str, content: list[Any], name: Any, calls: list, reasoning: list
) -> list[Msg]:
    blocks = [_provider_block(b) for b in content if isinstance(b, dict)]
    sub = from_blocks(role, blocks, name)
    if sub and sub[-1]["role"] == role and (calls or reasoning):
        sub[-1] = _merge(sub[-1], calls, reasoning)
    return sub if sub else [_merge(message(role, None), calls, reasoning)]


def from_blocks(role: Any, content: Any, name: Any = None) -> list[Msg]:
    """Messages from agentscope content: a string or a list of content blocks."""
    role = role_of(role)
    if not isinstance(content, list):
        text = None if content is None else _str(content)
        return [message(role, text, name=_name(role, name))]
    return _assemble(role, name, (_block_item(b) for b in content if isinstance(b, dict)))


def _block_item(b: dict[str, Any]) -> tuple[str, Any]:
    kind = b.get("type")
    if kind == "text":
        return "part", {"type": "text", "text": _str(b.get("text"))}
    if kind == "thinking":
        return "reasoning", _str(b.get("thinking"))
    if kind == "tool_use":
        return "call", tool_call(b.get("id"), b.get("name"), b.get("input"))
    if kind == "tool_result":
        text = tool_output_text(b.get("output"))
        return "result", {"role": "tool", "content": text, "tool_call_id": _id(b.get("id"))}
    return "part", _media_part(b)


def _assemble(role: str, name: Any, items: Iterable[tuple[str, Any]]) -> list[Msg]:
    """Messages from one message's parts, in order: text, media, reasoning and calls gather
    into one message; a tool result closes it and becomes its own `tool` message (agentscope
    2.x keeps a whole turn - text, call, result, text - in ONE assistant message). A message
    with no parts at all (2.x's empty in-progress reply) gives nothing."""
    out: list[Msg] = []
    parts: list[Any] = []
    calls: list[Any] = []
    reasoning: list[str] = []
    for kind, value in items:
        if kind == "result":
            _flush(out, role, name, parts, calls, reasoning)
            parts, calls, reasoning = [], [], []
            out.append(value)
        else:
            (parts if kind == "part" else calls if kind == "call" else reasoning).append(value)
    _flush(out, role, name, parts, calls, reasoning)
    return out


def _flush(out: list[Msg], role: str, name: Any, parts: list, calls: list, reasoning: list) -> None:
    if parts or calls or reasoning:
        out.append(
            _merge(message(role, content_of(parts), name=_name(role, name)), calls, reasoning)
        )


def response_text(value: Any) -> str:
    """A tool_call_response part's response as text. agentscope 2.x writes a JSON list of
    block reprs ('["TextBlock(type=\'text\', text=\'391\', ...)"]'): those are read; any
    other text is kept exactly."""
    if isinstance(value, str) and value.startswith('["') and "Block(" in value:
        try:
            items = orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
        blocks = [parse_repr(i) if isinstance(i, str) else i for i in items]
        if blocks and all(isinstance(b, dict) and "type" in b for b in blocks):
            return tool_output_text(blocks)
        return value
    return value if isinstance(value, str) else tool_output_text(value)


def tool_output_text(output: Any) -> str:
    """A tool output (string, block list, ToolResponse-like dict) as the text a model sees."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, dict):
        return tool_output_text(output.get("content", output.get("output", _dumps(output))))
    if not isinstance(output, list):
        return _dumps(output)
    lines = []
    for b in output:
        if isinstance(b, dict) and b.get("type") == "text":
            lines.append(_str(b.get("text")))
        elif isinstance(b, dict) and b.get("type") in _MEDIA:
            source = b.get("source") or {}
            where = source.get("url") or source.get("media_type") or "inline data"
            lines.append(f"The returned {b['type']} can be found at: {where}")
        else:
            lines.append(b if isinstance(b, str) else _dumps(b))
    return "\n".join(lines)


# --- message lists ---------------------------------------------------------------------


def add_call(out: list[Msg], call: dict[str, Any]) -> None:
    """Add `call` to the assistant message just before (parallel calls), or a new one."""
    last = out[-1] if out else None
    if last is not None and last["role"] == "assistant" and last.get("synthesized"):
        last["tool_calls"].append(call)
    else:
        out.append({"role": "assistant", "content": None, "tool_calls": [call], "synthesized": 1})


def signatures(msgs: list[Msg]) -> list[tuple[Any, ...]]:
    """What must agree between a prompt and the rebuilt steps: roles, assistant text and
    tool-call ids, tool-result ids (tool texts are formatted differently by providers)."""
    out = []
    for m in msgs:
        role = m["role"]
        if role == "tool":
            out.append((role, m.get("tool_call_id")))
        elif role == "assistant":
            ids = tuple(c["id"] for c in m.get("tool_calls", ()))
            out.append((role, text_of(m["content"]).strip() if not ids else "", ids))
        else:
            out.append((role, text_of(m["content"]).strip()))
    return out


def enrich(from_prompt: Msg, from_span: Msg) -> Msg:
    """The prompt's copy of an earlier step, with what only the span knew (usage, reasoning)."""
    out = dict(from_prompt)
    for key in ("usage", "reasoning"):
        if key in from_span and key not in out:
            out[key] = from_span[key]
    return out


def no_system(msgs: list[Msg]) -> list[Msg]:
    return [m for m in msgs if m["role"] != "system"]


def _merge(msg: Msg, calls: list, reasoning: list) -> Msg:
    if calls:
        msg["tool_calls"] = msg.get("tool_calls", []) + calls
    if reasoning:
        msg["reasoning"] = "\n".join(reasoning)
    return msg


def _openai_call(c: dict[str, Any]) -> dict[str, Any]:
    fn = c.get("function") if isinstance(c.get("function"), dict) else c
    return tool_call(c.get("id"), fn.get("name"), fn.get("arguments"))


def _provider_block(b: dict[str, Any]) -> dict[str, Any]:
    """Provider content parts in agentscope block terms (so `from_blocks` reads them)."""
    kind = b.get("type")
    if kind is None and "text" in b:  # DashScope
        return {"type": "text", "text": b["text"]}
    if kind == "tool_result":  # Anthropic
        return {"type": "tool_result", "id": b.get("tool_use_id"), "output": b.get("content")}
    return b


def _media_part(p: dict[str, Any]) -> dict[str, Any]:
    """Images as OpenAI `image_url` parts; any other part kept as it came."""
    modality = p.get("modality") or p.get("type")
    mime = p.get("mime_type") or p.get("media_type") or ""
    source = p.get("source") if isinstance(p.get("source"), dict) else None
    if source is not None:  # agentscope block
        mime = source.get("media_type") or mime
        url = source.get("url") or f"data:{mime};base64,{source.get('data', '')}"
    elif p.get("type") == "uri":
        url = p.get("uri")
    elif p.get("type") == "blob":
        url = f"data:{mime};base64,{p.get('content', '')}"
    else:
        return dict(p)
    if modality == "image" or mime.startswith("image/"):
        return {"type": "image_url", "image_url": {"url": url}}
    return dict(p)


def _name(role: str, name: Any) -> str | None:
    """Names are kept only where they carry meaning: a user-role message from someone other
    than the user (another agent's message fed to this one)."""
    if role != "user" or not name or not isinstance(name, str) or name.lower() == "user":
        return None
    return name


def _id(value: Any) -> str | None:
    """A tool result's call id as text (a call's own id is `str`-ed by `tool_call`)."""
    return value if value is None or isinstance(value, str) else str(value)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else _dumps(value)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0
