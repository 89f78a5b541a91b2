"""TRL SFT export: conversational records `{messages, tools}` as TRL's SFTTrainer reads them.

Tool-call `arguments` are dicts (chat templates index into them), `tools` are JSON schemas,
tool results are `tool` role messages with the tool's `name`. A trajectory whose calls did
not parse cannot be rendered by a chat template: it is refused with a reason, not written.

>>> from agentmill.records import FunctionCall, Message, ToolCall, Trajectory
>>> fc = FunctionCall(name="calculator", arguments={"expression": "2+2"})
>>> call = ToolCall(id="c0", function=fc)
>>> t = Trajectory(id="a", task_id="t", messages=[
...     Message(role="user", content="2+2?"), Message(role="assistant", tool_calls=[call]),
...     Message(role="tool", tool_call_id="c0", name="calculator", content="4"),
...     Message(role="assistant", content="4")])
>>> rec = to_trl_sft(t, tools=[])
>>> rec["messages"][1]["tool_calls"][0]["function"]
{'name': 'calculator', 'arguments': {'expression': '2+2'}}
>>> rec["messages"][1]["content"], rec["messages"][2]["name"], rec["id"]
('', 'calculator', 'a')
"""

from __future__ import annotations

from typing import Any

from agentmill.records import Message, Trajectory


class ExportError(ValueError):
    """A record that this format cannot represent; `reason` is a stable label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(detail or reason)
        self.reason = reason


def sft_message(m: Message, include_reasoning: bool) -> dict[str, Any]:
    """One message in TRL's shape (text content, dict arguments, named tool results)."""
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.tool_calls:
        if any(c.function.arguments is None for c in m.tool_calls):
            raise ExportError("malformed_tool_call", "a tool call's arguments did not parse")
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.function.name, "arguments": c.function.arguments},
            }
            for c in m.tool_calls
        ]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id
        out["name"] = m.name or ""
    if include_reasoning and m.reasoning:
        out["reasoning_content"] = m.reasoning
    return out


def to_trl_sft(
    t: Trajectory, tools: list[dict[str, Any]], include_reasoning: bool = False
) -> dict[str, Any]:
    """One TRL conversational record; raises `ExportError` when it cannot be one."""
    if not any(m.role == "assistant" for m in t.messages):
        raise ExportError("no_assistant_turn")
    if t.messages[-1].role != "assistant":
        raise ExportError("ends_without_answer", "the last message is not an assistant turn")
    return {
        "id": t.id,
        "task_id": t.task_id,
        "messages": [sft_message(m, include_reasoning) for m in t.messages],
        "tools": tools,
    }


def to_prompt_completion(
    t: Trajectory, tools: list[dict[str, Any]], include_reasoning: bool = False
) -> dict[str, Any]:
    """TRL's conversational prompt-completion form `{id, task_id, prompt, completion, tools}`:
    the prompt runs up to and including the last user turn, the completion is everything the
    agent did after it (assistant turns, tool results). TRL trains only the completion
    (`completion_only_loss`), tool results included.

    >>> from agentmill.records import Message, Trajectory
    >>> t = Trajectory(id="a", task_id="t", messages=[
    ...     Message(role="user", content="2+2?"), Message(role="assistant", content="4")])
    >>> rec = to_prompt_completion(t, tools=[])
    >>> rec["prompt"], rec["completion"]
    ([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '4'}])
    """
    record = to_trl_sft(t, tools, include_reasoning)
    messages = record.pop("messages")
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    if not users:
        raise ExportError("no_user_turn")
    cut = users[-1] + 1
    if messages[cut]["role"] != "assistant":
        raise ExportError("completion_not_assistant", "the last user turn is not answered")
    record.update(prompt=messages[:cut], completion=messages[cut:])
    record["tools"] = record.pop("tools")
    return record
