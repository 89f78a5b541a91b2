"""The text tool-call protocol: the shipped template, the parser, the text messages for servers
without a tool parser, and forced calls (constrained decoding) on the real embedded model."""

from __future__ import annotations

import asyncio
import doctest
from pathlib import Path
from typing import Any

import pytest

import agentmill.backends.constrained
import agentmill.rollout.protocol
from agentmill.backends.base import BackendError, Completion
from agentmill.backends.constrained import (
    FORCED_PREFIX,
    call_schema,
    forced_functions,
    wrap_call,
)
from agentmill.backends.local import LocalBackend
from agentmill.config import LocalBackendConfig
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall
from agentmill.rollout.protocol import (
    assistant_text,
    call_text,
    load_template,
    parse_tool_calls,
    render,
    template_message,
    to_text_messages,
)


def tool(name: str, prop: str, description: str) -> dict[str, Any]:
    params = {"type": "object", "properties": {prop: {"type": "string"}}}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": params},
    }


CALC = tool("calculator", "expression", "Evaluate an arithmetic expression.")
WEATHER = tool("weather", "city", "Current weather in a city.")


def call(id_: str, name: str, **arguments: Any) -> ToolCall:
    return ToolCall(id=id_, function=FunctionCall(name=name, arguments=arguments))


TRAJECTORY = [
    Message(role="system", content="You are a helpful assistant."),
    Message(role="user", content="What is 17 * 23, and the weather in Paris?"),
    Message(
        role="assistant",
        content="I will look both up.",
        tool_calls=[
            call("c1", "calculator", expression="17 * 23"),
            call("c2", "weather", city="Paris"),
        ],
    ),
    Message(role="tool", tool_call_id="c1", content="391"),
    Message(role="tool", tool_call_id="c2", content="Error: the weather service is down"),
    Message(role="assistant", content="17 * 23 = 391; the weather is unknown."),
    Message(role="user", content="And 2 + 2?"),
    Message(role="assistant", tool_calls=[call("c3", "calculator", expression="2 + 2")]),
    Message(role="tool", tool_call_id="c3", content="4"),
    Message(role="assistant", content="2 + 2 = 4."),
]


def test_doctests() -> None:
    for mod in (agentmill.rollout.protocol, agentmill.backends.constrained):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


# ---------------------------------------------------------------- the template
def test_every_message_appears_in_order_and_results_share_one_user_turn() -> None:
    text = render(TRAJECTORY, [CALC, WEATHER], add_generation_prompt=False)
    pos = 0
    for m in TRAJECTORY:
        pieces = [m.text] + [call_text(c.function) for c in m.tool_calls or []]
        for piece in filter(None, pieces):
            found = text.find(piece, pos)
            assert found >= 0, piece
            pos = found + len(piece)
    assert "<tools>\n" + '{"name": "calculator"' in text and '{"name": "weather"' in text
    assert "<tool_response>\n391\n</tool_response>\n<tool_response>\nError: the weather" in text
    assert text.count("<|im_start|>user\n") == 4  # two questions, two turns of results
    assert text.count("<tool_call>\n") == 3 + 1  # three calls and the format instructions
    assert not text.endswith("<|im_start|>assistant\n")
    assert render(TRAJECTORY[:2], [CALC]).endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_tools_without_system_message_get_their_own_system_turn() -> None:
    text = render([Message(role="user", content="Hi")], [CALC])
    assert text.startswith("<|im_start|>system\n# Tools\n")
    assert render([Message(role="user", content="Hi")], None) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


@pytest.fixture(scope="module")
def tokenizer(smollm_path: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_path)


@pytest.mark.model
def test_transformers_renders_the_same_and_masks_exactly_the_assistant_turns(
    tokenizer: Any,
) -> None:
    conversation = [template_message(m) for m in TRAJECTORY]
    kw = {"tools": [CALC, WEATHER], "chat_template": load_template()}
    text = tokenizer.apply_chat_template(conversation, tokenize=False, **kw)
    assert text == render(TRAJECTORY, [CALC, WEATHER], add_generation_prompt=False)
    out = tokenizer.apply_chat_template(
        conversation, return_assistant_tokens_mask=True, return_dict=True, tokenize=True, **kw
    )
    spans: list[list[int]] = [[]]
    for token, masked in zip(out["input_ids"], out["assistant_masks"], strict=True):
        if masked:
            spans[-1].append(token)
        elif spans[-1]:
            spans.append([])
    decoded = [tokenizer.decode(s) for s in spans if s]
    expected = [assistant_text(m) + "<|im_end|>" for m in TRAJECTORY if m.role == "assistant"]
    assert decoded == expected


@pytest.mark.model
@pytest.mark.parametrize("first", [0, 1])  # with and without the system message
def test_text_messages_render_the_same_through_the_models_own_template(
    tokenizer: Any, first: int
) -> None:
    messages = TRAJECTORY[first:]
    plain = to_text_messages(messages, [CALC, WEATHER])
    assert all(set(m) == {"role", "content"} for m in plain)
    assert [m["role"] for m in plain].count("assistant") == 4
    served = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True)
    assert served == render(messages, [CALC, WEATHER])
    no_tools = tokenizer.apply_chat_template(
        to_text_messages(TRAJECTORY, None), tokenize=False, add_generation_prompt=True
    )
    assert no_tools == render(TRAJECTORY, None)


# ---------------------------------------------------------------- the parser
def block(body: str) -> str:
    return f"<tool_call>\n{body}\n</tool_call>"


def test_parse_one_call() -> None:
    turn = parse_tool_calls(block('{"name": "calculator", "arguments": {"expression": "1+1"}}'))
    assert turn.content == "" and turn.errors == []
    (c,) = turn.calls
    assert c.id == "call_0" and c.function.name == "calculator"
    assert c.function.arguments == {"expression": "1+1"}


def test_parse_two_calls_with_text_around_them() -> None:
    text = (
        "Let me check.\n"
        + block('{"name": "calculator", "arguments": {"expression": "2*3"}}')
        + "\n"
        + block('{"name": "weather", "arguments": {"city": "Oslo"}}')
        + "\nDone."
    )
    turn = parse_tool_calls(text, first_id=4)
    assert turn.content == "Let me check.\n\n\nDone." and turn.errors == []
    assert [(c.id, c.function.name) for c in turn.calls] == [
        ("call_4", "calculator"),
        ("call_5", "weather"),
    ]


def test_parse_malformed_json_keeps_the_block_and_explains() -> None:
    body = '{"name": "calculator", "arguments": {"expression": "2*3"}'
    turn = parse_tool_calls("Sure. " + block(body))
    (c,) = turn.calls
    assert c.function.arguments is None and c.function.raw_arguments == body
    assert c.function.name == "calculator" and turn.content == "Sure."
    (error,) = turn.errors
    assert error.startswith("tool call 1: invalid JSON") and '"arguments"' in error
    # The kept text renders back exactly as the model wrote it.
    assert assistant_text(Message(role="assistant", tool_calls=turn.calls)) == block(body)


def test_parse_missing_name_and_non_object() -> None:
    turn = parse_tool_calls(block('{"arguments": {"x": 1}}') + block("[1, 2]"))
    assert [c.function.name for c in turn.calls] == ["", ""]
    assert all(c.function.arguments is None for c in turn.calls)
    assert 'missing "name"' in turn.errors[0] and "got list" in turn.errors[1]
    assert turn.errors[1].startswith("tool call 2:")


def test_parse_arguments_as_string_or_parameters() -> None:
    turn = parse_tool_calls(
        block('{"name": "calculator", "arguments": "{\\"expression\\": \\"1+1\\"}"}')
        + block('{"name": "weather", "parameters": {"city": "Rome"}}')
        + block('{"name": "clock"}')
        + block('{"name": "calculator", "arguments": "1+1"}')
    )
    args = [c.function.arguments for c in turn.calls]
    assert args == [{"expression": "1+1"}, {"city": "Rome"}, {}, None]
    (error,) = turn.errors
    assert error.startswith('tool call 4: "arguments" is a string')


def test_parse_unclosed_block_is_malformed() -> None:
    text = "Working. " + "<tool_call>\n" + '{"name": "calculator", "arguments": {"expre'
    turn = parse_tool_calls(text)
    (c,) = turn.calls
    assert c.function.name == "calculator" and c.function.arguments is None
    assert turn.errors[0].startswith("tool call 1: no closing </tool_call> tag")
    assert turn.content == "Working."
    # An opening tag before the previous block closed ends that block, unclosed.
    two = parse_tool_calls("<tool_call>{" + block('{"name": "clock", "arguments": {}}'))
    assert [c.function.arguments for c in two.calls] == [None, {}] and len(two.errors) == 1


def test_parse_no_block() -> None:
    turn = parse_tool_calls("  The answer is 4.\n")
    assert turn.content == "The answer is 4." and turn.calls == [] and turn.errors == []


def test_raw_arguments_from_a_native_api_keep_their_name() -> None:
    fn = FunctionCall(name="calculator", raw_arguments='{"expression": "1+')
    assert call_text(fn) == '{"name": "calculator", "arguments": {"expression": "1+}'


# ---------------------------------------------------------------- forced calls
def test_forced_functions_follow_tool_choice() -> None:
    tools = [CALC, WEATHER]
    assert forced_functions(tools, "auto") is None and forced_functions(tools, "none") is None
    assert forced_functions(None, "required") is None
    assert [f["name"] for f in forced_functions(tools, "required") or []] == [
        "calculator",
        "weather",
    ]
    assert [f["name"] for f in forced_functions(tools, "weather") or []] == ["weather"]
    with pytest.raises(BackendError) as err:
        forced_functions(tools, "search")
    assert err.value.reason == "bad_request" and "'calculator'" in str(err.value)


def test_call_schema_and_wrapping() -> None:
    functions = forced_functions([CALC, WEATHER], "required") or []
    schema = call_schema(functions)
    names = [o["properties"]["name"]["const"] for o in schema["anyOf"]]
    assert names == ["calculator", "weather"]
    assert wrap_call('{"a": 1}', complete=True) == block('{"a": 1}')
    assert wrap_call('{"a": ', complete=False) == FORCED_PREFIX + '{"a": '


# The small model needs a worked example to fill the argument with the question's expression.
FEW_SHOT = [
    Message(
        role="system",
        content="You are a careful assistant. Use the calculator tool for arithmetic.\n"
        'Example: for "What is 12 * 7?" you write:\n'
        + block('{"name": "calculator", "arguments": {"expression": "12 * 7"}}'),
    ),
    Message(role="user", content="What is 12 * 7?"),
    Message(role="assistant", tool_calls=[call("c0", "calculator", expression="12 * 7")]),
    Message(role="tool", tool_call_id="c0", content="84"),
    Message(role="assistant", content="12 * 7 = 84."),
]
QUESTIONS = [
    "What is 17 * 23?",
    "What is 5 + 9?",
    "What is 120 / 4?",
    "What is 88 - 13?",
    "What is 7 * 8?",
    "What is 300 + 45?",
    "What is 64 / 8?",
    "What is 91 - 19?",
]


def ask_all(
    backend: LocalBackend, questions: list[str], tools: list[dict[str, Any]], choices: list[str]
) -> list[Completion]:
    async def run() -> list[Completion]:
        return await asyncio.gather(
            *[
                backend.complete(
                    [*FEW_SHOT, Message(role="user", content=q)],
                    tools,
                    SamplingParams(temperature=0, max_tokens=48, tool_choice=choice),
                )
                for q, choice in zip(questions, choices, strict=True)
            ]
        )

    return asyncio.run(run())


@pytest.mark.model
def test_required_tool_choice_gives_well_formed_calls(local_backend: LocalBackend) -> None:
    before = local_backend.stats["generate_calls"]
    completions = ask_all(local_backend, QUESTIONS, [CALC], ["required"] * len(QUESTIONS))
    assert local_backend.stats["generate_calls"] - before < len(QUESTIONS)  # batched
    for c in completions:
        turn = parse_tool_calls(c.text)
        assert turn.errors == [] and len(turn.calls) == 1, c.text
        args = turn.calls[0].function.arguments
        assert isinstance(args, dict) and "expression" in args, c.text


@pytest.mark.model
def test_named_tool_choice_picks_that_tool(local_backend: LocalBackend) -> None:
    choices = ["weather", "calculator", "weather", "calculator"]
    completions = ask_all(local_backend, QUESTIONS[:4], [CALC, WEATHER], choices)
    for c, choice in zip(completions, choices, strict=True):
        assert c.text.startswith(FORCED_PREFIX + '{"name": "' + choice + '"'), c.text
        assert [x.function.name for x in parse_tool_calls(c.text).calls] == [choice]


@pytest.mark.model
def test_one_generate_constrains_each_row_by_its_own_grammar(
    local_backend: LocalBackend,
) -> None:
    engine = local_backend.engine
    names = ("weather", "calculator")
    grammars = [engine.grammars.get(forced_functions([CALC, WEATHER], n) or []) for n in names]
    prompt = render([Message(role="user", content="Weather in Oslo?")], [CALC, WEATHER])
    rows = engine.generate([prompt + FORCED_PREFIX] * 2, (0.0, 1.0, 24, ()), [], grammars)
    assert rows[0].text.startswith('{"name": "weather", "arguments": {"city": "')
    assert rows[1].text.startswith('{"name": "calculator", "arguments": {')


def test_unknown_tool_choice_is_a_bad_request_before_any_loading() -> None:
    backend = LocalBackend("local", LocalBackendConfig(model="smollm2-135m"))
    params = SamplingParams(temperature=0, max_tokens=4, tool_choice="search")
    with pytest.raises(BackendError) as err:
        asyncio.run(backend.complete(FEW_SHOT, [CALC], params))
    assert backend._engine is None
    assert err.value.reason == "bad_request" and not err.value.transient
