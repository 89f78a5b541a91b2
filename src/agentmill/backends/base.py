"""The backend interface: one async call, `complete(messages, tools, params) -> Completion`.

A backend is anything with that method and a `name`. The pipeline wraps every backend in
`backends.instrumented.Instrumented`, which adds the response cache and the call log, so
backends themselves only talk to a model.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from agentmill.records import Message, SamplingParams, ToolCall, Usage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]


class Completion(BaseModel):
    """What one model call returned."""

    text: str = ""
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    finish_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    model: str | None = None
    # Filled by the backend: how many HTTP attempts (1 = no retry) and the wall time they took.
    attempts: int = 1
    latency_s: float = 0.0
    cached: bool = False

    def to_message(self) -> Message:
        """The assistant message this completion stands for."""
        return Message(
            role="assistant",
            content=self.text if (self.text or not self.tool_calls) else None,
            tool_calls=self.tool_calls or None,
            reasoning=self.reasoning,
            usage=self.usage,
        )


class BackendError(Exception):
    """A model call failed for good (after the retries the backend allows).

    `reason` is a short stable label used to count failures (e.g. "http_500", "timeout",
    "connection", "malformed_response", "http_400"); `attempts` says how many tries were made.
    """

    def __init__(self, reason: str, message: str, attempts: int = 1, transient: bool = False):
        super().__init__(message)
        self.reason = reason
        self.attempts = attempts
        self.transient = transient


@runtime_checkable
class Backend(Protocol):
    """A model that completes chat messages."""

    name: str
    model: str
    max_concurrency: int

    async def complete(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        params: SamplingParams,
    ) -> Completion: ...

    async def aclose(self) -> None: ...
