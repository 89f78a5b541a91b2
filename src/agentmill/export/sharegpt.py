"""LLaMA-Factory sharegpt export, with tools, and its preference (`ranking`) form.

Rules (LLaMA-Factory 0.9.5, see docs/reference trainer-formats): turns alternate, `human` or
`observation` at even positions (0, 2, ...), `gpt` or `function_call` at odd ones, and an
SFT conversation has an even count. So an assistant turn that calls tools becomes ONE
`function_call` turn whose value is `{"name", "arguments"}` as JSON (a JSON list for
parallel calls), and consecutive tool results become ONE `observation` (joined by a blank
line). `tools` is a JSON string. The loader stops the whole run on invalid JSON in `tools`
or a `function_call` value, and silently drops role errors, so every record is checked with
`validate_sharegpt` before it is returned.

The text an assistant wrote beside its call cannot sit in a `function_call` value (it must
be JSON): with `assistant_text="drop"` (default) it is left out; with `"think"` it goes in
front as `<think>text</think>`, which the loader strips only for templates whose thought
words are `<think>`/`</think>` (Qwen3 and friends).

>>> from agentmill.records import FunctionCall, Message, ToolCall, Trajectory
>>> calls = [ToolCall(id=f"c{i}", function=FunctionCall(name="add", arguments={"a": i}))
...          for i in range(2)]
>>> t = Trajectory(id="r", task_id="t", messages=[
...     Message(role="system", content="Be brief."), Message(role="user", content="sums?"),
...     Message(role="assistant", tool_calls=calls),
...     Message(role="tool", tool_call_id="c0", name="add", content="0"),
...     Message(role="tool", tool_call_id="c1", name="add", content="1"),
...     Message(role="assistant", content="0 and 1")])
>>> rec = to_sharegpt(t, tools=[{"name": "add", "parameters": {"type": "object"}}])
>>> [turn["from"] for turn in rec["conversations"]]
['human', 'function_call', 'observation', 'gpt']
>>> rec["conversations"][1]["value"]
'[{"name": "add", "arguments": {"a": 0}}, {"name": "add", "arguments": {"a": 1}}]'
>>> rec["system"], rec["tools"][:9], validate_sharegpt(rec)
('Be brief.', '[{"name":', [])
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from agentmill.export.trl_sft import ExportError, sft_message
from agentmill.records import Trajectory

AssistantText = Literal["drop", "think"]
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
_EVEN = ("human", "observation")
_ODD = ("gpt", "function_call")


def _call_value(message: dict[str, Any], assistant_text: AssistantText) -> str:
    calls = [
        {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
        for c in message["tool_calls"]
    ]
    value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
    text = message.get("content") or ""
    if assistant_text == "think" and text.strip():
        return f"<think>{text}</think>{value}"
    return value


def _turn(message: dict[str, Any], assistant_text: AssistantText) -> dict[str, str]:
    role = message["role"]
    if role == "user":
        return {"from": "human", "value": message.get("content") or ""}
    if role == "tool":
        return {"from": "observation", "value": message.get("content") or ""}
    if message.get("tool_calls"):
        return {"from": "function_call", "value": _call_value(message, assistant_text)}
    return {"from": "gpt", "value": message.get("content") or ""}


def conversation_turns(
    messages: list[dict[str, Any]], assistant_text: AssistantText = "drop"
) -> tuple[str | None, list[dict[str, str]]]:
    """(system text, turns) from TRL-shaped messages; consecutive user turns or tool
    results are merged. A system message after the first turn cannot be represented."""
    system: str | None = None
    turns: list[dict[str, str]] = []
    for m in messages:
        if m["role"] == "system":
            if turns:
                raise ExportError("system_mid_conversation")
            text = m.get("content") or ""
            system = text if system is None else f"{system}\n\n{text}"
            continue
        turn = _turn(m, assistant_text)
        if turns and turn["from"] in _EVEN and turns[-1]["from"] == turn["from"]:
            turns[-1] = {"from": turn["from"], "value": f"{turns[-1]['value']}\n\n{turn['value']}"}
        else:
            turns.append(turn)
    return system, turns


def _checked(record: dict[str, Any]) -> dict[str, Any]:
    problems = validate_sharegpt(record)
    if problems:
        raise ExportError("invalid_sharegpt", "; ".join(problems))
    return record


def to_sharegpt(
    t: Trajectory, tools: list[dict[str, Any]], assistant_text: AssistantText = "drop"
) -> dict[str, Any]:
    """One sharegpt SFT record; raises `ExportError` (malformed_tool_call,
    ends_without_answer, system_mid_conversation, invalid_sharegpt) when it cannot be one."""
    if not t.messages or t.messages[-1].role != "assistant" or t.messages[-1].tool_calls:
        raise ExportError("ends_without_answer", "the last message is not an assistant answer")
    system, turns = conversation_turns([sft_message(m, False) for m in t.messages], assistant_text)
    record: dict[str, Any] = {"id": t.id, "task_id": t.task_id, "conversations": turns}
    record["system"] = system or ""
    record["tools"] = json.dumps(tools, ensure_ascii=False)
    return _checked(record)


def to_sharegpt_pair(pair: dict[str, Any], assistant_text: AssistantText = "drop") -> dict:
    """The `ranking: true` form of a DPO pair from `dpo_pairs`: the prompt as
    `conversations` (odd count), and the FIRST assistant turn of each continuation as the
    single `chosen` / `rejected` turn (where the two samples first differ)."""
    system, turns = conversation_turns(pair["prompt"], assistant_text)
    chosen, rejected = (_first_turn(pair[k], assistant_text) for k in ("chosen", "rejected"))
    if chosen == rejected:
        raise ExportError("same_first_turn", "the samples first differ after a tool result")
    record = {"id": pair["id"], "task_id": pair["task_id"], "conversations": turns}
    record.update(chosen=chosen, rejected=rejected, system=system or "")
    record["tools"] = json.dumps(pair.get("tools") or [], ensure_ascii=False)
    return _checked(record)


def _first_turn(messages: list[dict[str, Any]], assistant_text: AssistantText) -> dict:
    if not messages or messages[0]["role"] != "assistant":
        raise ExportError("continuation_not_assistant")
    return _turn(messages[0], assistant_text)


def validate_sharegpt(record: dict[str, Any]) -> list[str]:
    """Every rule of the loader this record breaks (empty when it would load and train).

    >>> validate_sharegpt({"conversations": [{"from": "gpt", "value": "hi"}], "tools": "[]"})
    ['turn 0 is gpt, expected human or observation', 'odd number of turns (1)']
    """
    ranking = "chosen" in record or "rejected" in record
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        return ["conversations is not a non-empty list"]
    problems = [p for i, turn in enumerate(turns) for p in _turn_problems(i, turn)]
    if ranking:
        problems += _ranking_problems(record, len(turns))
    elif len(turns) % 2:
        problems.append(f"odd number of turns ({len(turns)})")
    return problems + _tools_problems(record) + _system_problems(record)


def _turn_problems(i: int, turn: Any) -> list[str]:
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
        return [f"turn {i} is not {{from, value: str}}"]
    allowed = _EVEN if i % 2 == 0 else _ODD
    if turn.get("from") not in allowed:
        return [f"turn {i} is {turn.get('from')}, expected {' or '.join(allowed)}"]
    if turn["from"] == "function_call":
        return [f"turn {i}: {p}" for p in _call_problems(turn["value"])]
    return []


def _call_problems(value: str) -> list[str]:
    try:
        calls = json.loads(_THINK.sub("", value, count=1))
    except json.JSONDecodeError:
        return ["function_call value is not JSON"]
    calls = calls if isinstance(calls, list) else [calls]
    good = all(isinstance(c, dict) and {"name", "arguments"} <= c.keys() for c in calls)
    return [] if calls and good else ["function_call value lacks name/arguments"]


def _ranking_problems(record: dict[str, Any], n_turns: int) -> list[str]:
    problems = [] if n_turns % 2 else [f"even number of prompt turns ({n_turns})"]
    for key in ("chosen", "rejected"):
        turn = record.get(key)
        if not isinstance(turn, dict) or turn.get("from") not in _ODD:
            problems.append(f"{key} is not one gpt/function_call turn")
        elif not isinstance(turn.get("value"), str):
            problems.append(f"{key} value is not a string")
        elif turn["from"] == "function_call":
            problems += [f"{key}: {p}" for p in _call_problems(turn["value"])]
    return problems


def _tools_problems(record: dict[str, Any]) -> list[str]:
    if "tools" not in record:
        return []
    if not isinstance(record["tools"], str):
        return ["tools is not a JSON string"]
    try:
        tools = json.loads(record["tools"])
    except json.JSONDecodeError:
        return ["tools is not valid JSON"]
    return [] if isinstance(tools, list) else ["tools is not a JSON list"]


def _system_problems(record: dict[str, Any]) -> list[str]:
    ok = isinstance(record.get("system", ""), str)
    return [] if ok else ["system is not a string"]


def dataset_info_entry(file_name: str, ranking: bool = False) -> dict[str, Any]:
    """The value to put under a dataset's name in LLaMA-Factory's `dataset_info.json`.

    >>> dataset_info_entry("prefs.json", ranking=True)["columns"]["chosen"]
    'chosen'
    """
    columns = {"messages": "conversations", "system": "system", "tools": "tools"}
    entry: dict[str, Any] = {"file_name": file_name, "formatting": "sharegpt"}
    if ranking:
        entry["ranking"] = True
        columns.update(chosen="chosen", rejected="rejected")
    entry["columns"] = columns
    return entry
