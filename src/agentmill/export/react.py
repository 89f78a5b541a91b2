"""Plain-text ReAct export: Thought / Action / Action Input / Observation / Final Answer.

Records are `{"id", "task_id", "prompt": str, "completion": str}` (TRL's standard
prompt-completion form, so only the completion is trained), or `{"id", "task_id", "text"}`
(`form="text"`: prompt and completion joined) for plain language-model training.

The prompt holds the system text, the tools (name, description, JSON parameters) with the
format instructions, and `Question: <user turn>`. Each assistant step is a `Thought:` (its
text or reasoning, left out when empty) and, per call, `Action:` / `Action Input:` (the
arguments as JSON) followed by that call's `Observation:`; parallel calls are written one
after the other. The last step is `Final Answer:`. One question per record: a trajectory
with a second user turn is refused (`multi_user_turns`), as is a malformed call.

>>> from agentmill.records import FunctionCall, Message, ToolCall, Trajectory
>>> call = ToolCall(id="c0", function=FunctionCall(name="add", arguments={"a": 2, "b": 2}))
>>> t = Trajectory(id="r", task_id="t", messages=[
...     Message(role="user", content="2+2?"),
...     Message(role="assistant", content="I add.", tool_calls=[call]),
...     Message(role="tool", tool_call_id="c0", name="add", content="4"),
...     Message(role="assistant", content="4")])
>>> print(to_react(t, tools=[])["completion"])
Thought: I add.
Action: add
Action Input: {"a": 2, "b": 2}
Observation: 4
Final Answer: 4
"""

from __future__ import annotations

import json
from typing import Any, Literal

from agentmill.export.trl_sft import ExportError
from agentmill.records import Message, Trajectory

Form = Literal["prompt_completion", "text"]
INSTRUCTIONS = (
    "Answer the question. Use this format:\n"
    "Thought: what to do next\nAction: the tool to use\n"
    "Action Input: the tool's arguments as JSON\n"
    "Observation: the tool's result\n... (repeat as needed)\nFinal Answer: the answer"
)


def _tool_line(tool: dict[str, Any]) -> str:
    fn = tool.get("function", tool)
    params = json.dumps(fn.get("parameters", {}), ensure_ascii=False)
    return f"{fn.get('name', '')}: {fn.get('description', '')} Parameters: {params}"


def react_prompt(system: str, tools: list[dict[str, Any]], question: str) -> str:
    """The prompt text: system text, tools and format instructions, then the question."""
    parts = [system] if system else []
    if tools:
        parts.append("You have access to these tools:\n" + "\n".join(map(_tool_line, tools)))
    parts.append(INSTRUCTIONS)
    return "\n\n".join(parts) + f"\n\nQuestion: {question}\n"


def _step(m: Message, results: dict[str, str]) -> list[str]:
    thought = (m.text or m.reasoning or "").strip()
    if not m.tool_calls:
        lines = [f"Thought: {m.reasoning.strip()}"] if m.reasoning and m.text else []
        return [*lines, f"Final Answer: {m.text}"]
    lines = [f"Thought: {thought}"] if thought else []
    for c in m.tool_calls:
        if c.function.arguments is None:
            raise ExportError("malformed_tool_call", "a tool call's arguments did not parse")
        args = json.dumps(c.function.arguments, ensure_ascii=False)
        observation = results.get(c.id, "")
        lines += [f"Action: {c.function.name}", f"Action Input: {args}"]
        lines.append(f"Observation: {observation}")
    return lines


def _split(t: Trajectory) -> tuple[str, str, list[Message]]:
    system = "\n\n".join(m.text for m in t.messages if m.role == "system")
    users = [i for i, m in enumerate(t.messages) if m.role == "user"]
    if len(users) != 1:
        raise ExportError("multi_user_turns" if users else "no_user_turn")
    last = t.messages[-1]
    if last.role != "assistant" or last.tool_calls:
        raise ExportError("ends_without_answer", "the last message is not an assistant answer")
    return system, t.messages[users[0]].text, t.messages[users[0] + 1 :]


def to_react(t: Trajectory, tools: list[dict[str, Any]], form: Form = "prompt_completion") -> dict:
    """One ReAct record; raises `ExportError` when the trajectory cannot be one."""
    system, question, rest = _split(t)
    results = {m.tool_call_id or "": m.text for m in rest if m.role == "tool"}
    steps = [line for m in rest if m.role == "assistant" for line in _step(m, results)]
    prompt, completion = react_prompt(system, tools, question), "\n".join(steps)
    if form == "text":
        return {"id": t.id, "task_id": t.task_id, "text": prompt + completion}
    return {"id": t.id, "task_id": t.task_id, "prompt": prompt, "completion": completion}
