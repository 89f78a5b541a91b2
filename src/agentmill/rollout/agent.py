"""The agent loop: think, call tools, observe, answer. One place, short on purpose.

Each step sends the conversation to the backend. Native tool calls are used when the
backend returns them; otherwise `<tool_call>` blocks in the text are parsed by the one text
protocol (`rollout.protocol`). Every call is executed (parallel calls of one turn run
concurrently) and its observation appended as a `tool` message; a malformed call, an
unknown tool, a tool that raises or times out all become error observations the model
sees, and are counted. The loop ends when the model answers without a call, or at a limit
(steps, generated tokens, wall time), always with a recorded stop reason:

- `answer`: the model replied without a tool call
- `length`: that reply was cut by `max_tokens`
- `max_steps`, `max_tokens`, `timeout`: a limit of `AgentConfig` was reached

Records always hold canonical OpenAI-style messages, whatever protocol the model spoke.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from agentmill.backends.base import Completion
from agentmill.records import AgentStats, Message, SamplingParams, ToolCall, Usage
from agentmill.rollout.configs import AgentConfig
from agentmill.rollout.protocol import parse_tool_calls, to_text_messages
from agentmill.rollout.tools import Tool, ToolError

CALL_HINT = 'Write <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
# What an injected failure looks like to the model: a transient error worth retrying.
INJECTED_FAILURE = "Error: the tool is temporarily unavailable (timed out); try the call again."


@dataclass
class AgentResult:
    messages: list[Message]
    final_answer: str | None = None
    stop_reason: str = "answer"
    usage: Usage = field(default_factory=Usage)
    stats: AgentStats = field(default_factory=AgentStats)
    latency_s: float = 0.0
    model: str | None = None
    cached_steps: int = 0
    inject: bool = False  # this sample's first valid call is to fail (AgentConfig)
    injected: str | None = None  # the id of the call that got the injected failure

    def recovered(self) -> bool:
        """After the injected failure, a call of the same tool returned a result."""
        if self.injected is None:
            return False
        failed = next(
            (
                i
                for i, m in enumerate(self.messages)
                if m.role == "tool" and m.tool_call_id == self.injected
            ),
            None,
        )
        if failed is None:
            return False
        tool = self.messages[failed].name
        return any(
            m.role == "tool" and m.name == tool and not m.text.startswith("Error")
            for m in self.messages[failed + 1 :]
        )


@dataclass
class Agent:
    """One configured agent: a backend (anything with `complete`), tools, limits."""

    backend: Any
    tools: dict[str, Tool]
    cfg: AgentConfig
    params: SamplingParams
    text_protocol: bool = False  # render tools as text for a server without a tool parser
    few_shot: list[Message] = field(
        default_factory=list
    )  # sent after the system prompt, not recorded

    def schemas(self) -> list[dict[str, Any]]:
        return [t.schema() for t in self.tools.values()]

    async def run(
        self, messages: list[Message], sample_index: int = 0, key: str = ""
    ) -> AgentResult:
        """Run the loop from `messages` (the prompt) until an answer or a limit."""
        result = AgentResult(messages=list(messages), inject=self._injects(key, sample_index))
        start = time.monotonic()
        try:
            async with asyncio.timeout(self.cfg.max_wall_s):
                await self._loop(result, sample_index, key)
        except TimeoutError:
            result.stop_reason = "timeout"
        result.latency_s = time.monotonic() - start
        return result

    def _injects(self, key: str, sample_index: int) -> bool:
        rate = self.cfg.inject_tool_failure
        if rate <= 0:
            return False
        h = hashlib.sha256(f"inject|{key}|{sample_index}".encode()).digest()
        return int.from_bytes(h[:8], "big") / 2**64 < rate

    async def _loop(self, r: AgentResult, sample_index: int, key: str) -> None:
        while True:
            if r.stats.steps >= self.cfg.max_steps:
                r.stop_reason = "max_steps"
                return
            budget = self.cfg.max_total_tokens - r.usage.completion_tokens
            if budget <= 0:
                r.stop_reason = "max_tokens"
                return
            choice = self._tool_choice(r)
            c = await self._complete(r, budget, sample_index, key, choice)
            if choice == "none":  # told not to call: call-like text stays text, as in the API
                message, errors = self._text_message(c), {}
            else:
                message, errors = self._assistant_message(c, first_id=r.stats.tool_calls)
            r.messages.append(message)
            if not message.tool_calls:
                r.final_answer = message.text
                r.stop_reason = "length" if c.finish_reason == "length" else "answer"
                return
            r.messages.extend(await self._observe(message.tool_calls, errors, r))

    def _tool_choice(self, r: AgentResult) -> str:
        if r.stats.steps == 0 and self.cfg.first_tool_choice and self.tools:
            return self.cfg.first_tool_choice
        return self.params.tool_choice

    async def _complete(
        self, r: AgentResult, budget: int, sample_index: int, key: str, choice: str
    ) -> Completion:
        budget = min(self.params.max_tokens, budget)
        params = self.params.model_copy(update={"max_tokens": budget, "tool_choice": choice})
        tools = self.schemas() or None
        messages = self._with_few_shot(r.messages)  # a new list: r.messages keeps growing
        if self.text_protocol and tools:
            messages = [Message.model_validate(m) for m in to_text_messages(r.messages, tools)]
            tools = None
        c = await self.backend.complete(
            messages, tools, params, sample_index=sample_index, work_key=key
        )
        r.stats.steps += 1
        r.usage = r.usage + c.usage
        r.model = c.model or r.model
        r.cached_steps += int(c.cached)
        return c

    def _with_few_shot(self, messages: list[Message]) -> list[Message]:
        head = 1 if messages and messages[0].role == "system" else 0
        return [*messages[:head], *self.few_shot, *messages[head:]]

    @staticmethod
    def _text_message(c: Completion) -> Message:
        """The reply of a step that was not allowed to call: its text is the answer (a server
        that returned calls anyway has them dropped; the text protocol's tags stay in the text,
        where the `protocol_tags_in_text` filter finds them)."""
        return Message(role="assistant", content=c.text, reasoning=c.reasoning, usage=c.usage)

    def _assistant_message(self, c: Completion, first_id: int) -> tuple[Message, dict[str, str]]:
        """The canonical assistant message, and parse errors by call id. Ids of text-protocol
        calls continue the trajectory's count, so they stay unique across turns."""
        if c.tool_calls or "<tool_call>" not in c.text:
            return c.to_message(), {}
        parsed = parse_tool_calls(c.text, first_id=first_id)
        errors = dict(
            zip(
                (call.id for call in parsed.calls if call.function.arguments is None),
                parsed.errors,
                strict=False,
            )
        )
        message = Message(
            role="assistant",
            content=parsed.content or None,
            tool_calls=parsed.calls or None,
            reasoning=c.reasoning,
            usage=c.usage,
        )
        return message, errors

    async def _observe(
        self, calls: list[ToolCall], errors: dict[str, str], r: AgentResult
    ) -> list[Message]:
        outputs = await asyncio.gather(*(self._call(c, errors.get(c.id), r) for c in calls))
        return [
            Message(role="tool", tool_call_id=c.id, name=c.function.name or None, content=out)
            for c, out in zip(calls, outputs, strict=True)
        ]

    async def _call(self, call: ToolCall, parse_error: str | None, r: AgentResult) -> str:
        fn, stats = call.function, r.stats
        stats.tool_calls += 1
        if fn.arguments is None:
            stats.malformed_calls += 1
            why = parse_error or "arguments are not a JSON object"
            return f"Error: the tool call could not be parsed ({why}). {CALL_HINT}"
        tool = self.tools.get(fn.name)
        if tool is None:
            stats.unknown_tool_calls += 1
            names = ", ".join(self.tools) or "none"
            return f"Error: unknown tool {fn.name!r}; available tools: {names}."
        stats.by_tool[fn.name] = stats.by_tool.get(fn.name, 0) + 1
        if r.inject and r.injected is None:  # this sample's first valid call fails
            r.injected = call.id
            stats.tool_errors += 1
            return INJECTED_FAILURE
        try:
            return await asyncio.wait_for(tool.call(fn.arguments), self.cfg.tool_timeout_s)
        except ToolError as e:
            stats.tool_errors += 1
            return f"Error: {e}"
        except TimeoutError:
            stats.tool_errors += 1
            return f"Error: the tool did not finish within {self.cfg.tool_timeout_s:g} s."
        except Exception as e:  # a broken tool must not end the trajectory; the model sees it
            stats.tool_errors += 1
            return f"Error: {type(e).__name__}: {e}"
