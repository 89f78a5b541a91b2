"""A scripted fake backend for unit tests of control flow. It is NOT a model.

Replies are taken in call order from `replies` (cycling). A reply is a string (the text) or
a dict with any of `text`, `reasoning`, `tool_calls` (`[{"name": ..., "arguments": ...}]`),
`finish_reason`, and `fail` (a reason label: the call raises `BackendError`).

>>> import asyncio
>>> from agentmill.config import ScriptedBackendConfig
>>> from agentmill.records import Message, SamplingParams
>>> b = ScriptedBackend("fake", ScriptedBackendConfig(replies=["hi", "there"]))
>>> asyncio.run(b.complete([Message(role="user", content="x")], None, SamplingParams())).text
'hi'
"""

from __future__ import annotations

import asyncio
from typing import Any

from agentmill.backends.base import BackendError, Completion
from agentmill.config import ScriptedBackendConfig
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall, Usage


class ScriptedBackend:
    def __init__(self, name: str, cfg: ScriptedBackendConfig):
        self.name = name
        self.model = cfg.model
        self.max_concurrency = cfg.max_concurrency
        self._cfg = cfg
        self.calls: list[list[Message]] = []

    async def complete(
        self, messages: list[Message], tools: list[dict[str, Any]] | None, params: SamplingParams
    ) -> Completion:
        reply = self._cfg.replies[len(self.calls) % len(self._cfg.replies)]
        self.calls.append(messages)
        if self._cfg.delay_s:
            await asyncio.sleep(self._cfg.delay_s)
        if isinstance(reply, str):
            reply = {"text": reply}
        if reply.get("fail"):
            raise BackendError(reply["fail"], f"{self.name}: scripted failure {reply['fail']}")
        calls = [
            ToolCall(id=f"call_{i}", function=FunctionCall.parse(c["name"], c.get("arguments")))
            for i, c in enumerate(reply.get("tool_calls", []))
        ]
        text = reply.get("text", "")
        return Completion(
            text=text,
            reasoning=reply.get("reasoning"),
            tool_calls=calls,
            finish_reason=reply.get("finish_reason", "tool_calls" if calls else "stop"),
            usage=Usage(
                prompt_tokens=sum(len(m.text.split()) for m in messages),
                completion_tokens=len(text.split()),
            ),
            model=self.model,
        )

    async def aclose(self) -> None:
        return None
