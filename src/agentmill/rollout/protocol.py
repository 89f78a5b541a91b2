"""The text tool-call protocol: the one place that knows how tools travel as plain text.

A model without native tool support (SmolLM2, any ChatML model) gets tools Hermes/Qwen style:

- the tool schemas are listed in the system turn inside `<tools></tools>`, after the system
  message's own text (a system turn holding only the tool block when there is no system message);
- an assistant turn is its text, then one block per call (several allowed):
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`;
- consecutive tool results come back, in order, in ONE user turn of
  `<tool_response>\\n...\\n</tool_response>` blocks.

The chat template `data/templates/tool_chat.jinja` writes this format; the same template samples
(local backend), checks exports and trains (its generation markers feed TRL's
`assistant_only_loss`), so a model is trained on exactly what it is sampled with.
`to_text_messages` gives the same conversation as plain role/content dicts for an
OpenAI-compatible server without a tool parser, and `parse_tool_calls` reads a reply back.

>>> turn = parse_tool_calls('Let me compute.\\n<tool_call>\\n{"name": "calc", '
...                         '"arguments": {"x": "2+2"}}\\n</tool_call>')
>>> turn.content, turn.calls[0].function.arguments, turn.errors
('Let me compute.', {'x': '2+2'}, [])

Not rendered: `reasoning` (a model that thinks in text keeps it in `content`), a message's
`name`, and the ids of calls and results (results are matched to calls by order).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentmill.records import FunctionCall, Message, ToolCall

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "data" / "templates" / "tool_chat.jinja"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
CALL_FORMAT = '<tool_call>\n{"name": <function name>, "arguments": {<arguments>}}\n</tool_call>'

# A block ends at its closing tag, at the next opening tag (unclosed), or at the end of the text.
_BLOCK = re.compile(r"<tool_call>(.*?)(</tool_call>|(?=<tool_call>)|\Z)", re.DOTALL)
_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_SYSTEM_HEAD, _TURN_END = "<|im_start|>system\n", "<|im_end|>\n"


def load_template() -> str:
    """The text of the shipped chat template (`tool_chat.jinja`)."""
    return _template_text()


@lru_cache(maxsize=1)
def _template_text() -> str:
    return TEMPLATE_PATH.read_text(encoding="utf-8")


def dumps(obj: Any) -> str:
    """JSON the way chat templates' `tojson` writes it in transformers (UTF-8, `", "`/`": "`)."""
    return json.dumps(obj, ensure_ascii=False)


@lru_cache(maxsize=1)
def _compiled() -> Any:
    """The template compiled as transformers compiles chat templates: a sandboxed environment
    with trim_blocks/lstrip_blocks, its `tojson`, and `{% generation %}` accepted (a no-op)."""
    import jinja2.ext
    from jinja2 import nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser: Any) -> nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_body")
            return nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = dumps
    env.globals["raise_exception"] = raise_exception
    return env.from_string(load_template())


def template_message(m: Message) -> dict[str, Any]:
    """A message as chat templates expect it: text content, tool-call arguments as dicts
    (arguments that did not parse as their raw text)."""
    return m.to_openai(dict_arguments=True) | {"content": m.text}


def render(
    messages: list[Message],
    tools: list[dict[str, Any]] | None,
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The conversation in the text protocol, as `tool_chat.jinja` renders it (what
    `tokenizer.apply_chat_template(..., chat_template=load_template())` gives too)."""
    text: str = _compiled().render(
        messages=[template_message(m) for m in messages],
        tools=tools or None,
        add_generation_prompt=add_generation_prompt,
    )
    return text


def tool_function(tool: dict[str, Any]) -> dict[str, Any]:
    """The function part of an OpenAI tool schema (`{"type": "function", "function": {...}}`),
    or the schema itself when it is already flat (`{"name", "description", "parameters"}`)."""
    fn = tool.get("function")
    return fn if isinstance(fn, dict) else tool


def tool_block(tools: list[dict[str, Any]]) -> str:
    """The tool listing and calling instructions that go into the system turn."""
    text = render([], tools, add_generation_prompt=False)
    return text.removeprefix(_SYSTEM_HEAD).removesuffix(_TURN_END)


def call_text(fn: FunctionCall) -> str:
    """What goes inside one `<tool_call>` block. Raw text kept by `parse_tool_calls` (the whole
    block: the name is empty or appears in it) is written back as is; raw arguments text
    from a native API goes inside the usual `{"name": ..., "arguments": ...}` frame."""
    args: Any = fn.arguments if fn.arguments is not None else fn.raw_arguments
    if isinstance(args, str) and (not fn.name or dumps(fn.name) in args):
        return args
    args_text = args if isinstance(args, str) else dumps(args)
    return f'{{"name": {dumps(fn.name)}, "arguments": {args_text}}}'


def assistant_text(m: Message) -> str:
    """An assistant message as the model writes it: its text, then one block per call."""
    blocks = [f"{CALL_OPEN}\n{call_text(c.function)}\n{CALL_CLOSE}" for c in m.tool_calls or []]
    return "\n".join(([m.text] if m.text else []) + blocks)


def to_text_messages(
    messages: list[Message], tools: list[dict[str, Any]] | None
) -> list[dict[str, str]]:
    """Canonical messages as plain role/content dicts in the text protocol, for a server that
    has no tool parser: the tool block folded into the system message, calls into the assistant
    text, tool results into user turns. A ChatML server template renders them exactly as
    `render` does (given a system message or tools: else its own default system prompt shows)."""
    out: list[dict[str, str]] = []
    rest = messages
    if messages and messages[0].role == "system":
        extra = "\n\n" + tool_block(tools) if tools else ""
        out.append({"role": "system", "content": messages[0].text + extra})
        rest = messages[1:]
    elif tools:
        out.append({"role": "system", "content": tool_block(tools)})
    previous: Message | None = None
    for m in rest:
        if m.role == "tool":
            response = f"<tool_response>\n{m.text}\n</tool_response>"
            if previous is not None and previous.role == "tool":
                out[-1]["content"] += "\n" + response
            else:
                out.append({"role": "user", "content": response})
        elif m.role == "assistant":
            out.append({"role": "assistant", "content": assistant_text(m)})
        else:
            out.append({"role": m.role, "content": m.text})
        previous = m
    return out


@dataclass(frozen=True)
class ParsedTurn:
    """An assistant reply read back: the text outside the call blocks, every call (malformed
    ones included, with `arguments=None` and the block text in `raw_arguments`), and one
    error message per malformed call, fit to show the model as an observation."""

    content: str
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_tool_calls(text: str, *, first_id: int = 0) -> ParsedTurn:
    """Every `<tool_call>` block in `text`, ids `call_<first_id>`, `call_<first_id + 1>`, ...

    >>> turn = parse_tool_calls('<tool_call>{"name": "calc", "arguments": [1]}</tool_call>')
    >>> turn.errors[0].split(";")[0], turn.calls[0].function.arguments
    ('tool call 1: "arguments" must be a JSON object, got list', None)
    """
    calls: list[ToolCall] = []
    errors: list[str] = []
    outside: list[str] = []
    pos = 0
    for n, m in enumerate(_BLOCK.finditer(text)):
        outside.append(text[pos : m.start()])
        pos = m.end()
        fn, problem = _parse_block(m.group(1).strip(), closed=m.group(2) == CALL_CLOSE)
        calls.append(ToolCall(id=f"call_{first_id + n}", function=fn))
        if problem is not None:
            errors.append(f"tool call {n + 1}: {problem}; write {CALL_FORMAT}")
    outside.append(text[pos:])
    return ParsedTurn(content="".join(outside).strip(), calls=calls, errors=errors)


def _parse_block(body: str, *, closed: bool) -> tuple[FunctionCall, str | None]:
    """One block's call, and what was wrong with it (None when well formed)."""
    if not closed:
        return _malformed(body, _guess_name(body)), f"no closing {CALL_CLOSE} tag"
    try:
        obj = json.loads(body)
    except json.JSONDecodeError as e:
        problem = f"invalid JSON ({e.msg} at line {e.lineno} column {e.colno})"
        return _malformed(body, _guess_name(body)), problem
    if not isinstance(obj, dict):
        return _malformed(body, ""), f"expected a JSON object, got {type(obj).__name__}"
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return _malformed(body, ""), 'missing "name" (a non-empty string)'
    arguments, problem = _arguments(obj)
    if arguments is None:
        return _malformed(body, name), problem
    return FunctionCall(name=name, arguments=arguments), None


def _arguments(obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The call's arguments (`arguments`, or `parameters`; a JSON string is accepted)."""
    value = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(value, str):
        if not value.strip():
            return {}, None
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, '"arguments" is a string that is not a JSON object'
    if not isinstance(value, dict):
        return None, f'"arguments" must be a JSON object, got {_json_type(value)}'
    return value, None


def _json_type(value: Any) -> str:
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _malformed(body: str, name: str) -> FunctionCall:
    return FunctionCall(name=name, arguments=None, raw_arguments=body)


def _guess_name(body: str) -> str:
    """The `"name": "..."` value of a block that is not valid JSON, if one can be read."""
    m = _NAME.search(body)
    if m is None:
        return ""
    try:
        name = json.loads(f'"{m.group(1)}"')
    except json.JSONDecodeError:
        return ""
    return name if isinstance(name, str) else ""
