"""The one record set used end to end: `Task`, `Message`, `Trajectory`.

Every stage reads and writes these; every export format is a pure function of them.
Messages are stored in the canonical OpenAI chat shape (tool-call arguments as dicts,
results as `tool` role messages) whatever protocol the model actually spoke.

Records serialize to one JSON line each with orjson, and round-trip exactly:

>>> t = Task.create(prompt="What is 2+2?", ground_truth="4")
>>> Task.from_json(t.to_json()) == t
True
>>> t.id == Task.create(prompt="What is 2+2?", ground_truth="4").id  # content-hashed
True
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Literal, Self

import orjson
from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant", "tool"]


def content_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of an object's canonical JSON (sorted keys), `length` characters long."""
    data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(data, digest_size=16).hexdigest()[:length]


class Record(BaseModel):
    """Base of every record: strict keys, one orjson line each, exact round trip."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, line: bytes | str) -> Self:
        return cls.model_validate(orjson.loads(line))


class Usage(Record):
    """Token counts of one model call or a sum of calls."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class FunctionCall(Record):
    """`arguments` is the parsed dict; when the model's text did not parse as a JSON object,
    `arguments` is None and `raw_arguments` keeps the text exactly as written."""

    name: str
    arguments: dict[str, Any] | None = None
    raw_arguments: str | None = None

    @classmethod
    def parse(cls, name: str, arguments: str | dict[str, Any] | None) -> FunctionCall:
        """Build from an OpenAI-style `arguments` value (a JSON string or already a dict)."""
        if isinstance(arguments, dict):
            return cls(name=name, arguments=arguments)
        if arguments is None or arguments.strip() == "":
            return cls(name=name, arguments={})
        try:
            parsed = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            return cls(name=name, raw_arguments=arguments)
        if isinstance(parsed, dict):
            return cls(name=name, arguments=parsed)
        return cls(name=name, raw_arguments=arguments)

    @property
    def well_formed(self) -> bool:
        return self.arguments is not None


class ToolCall(Record):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(Record):
    """One chat message in the OpenAI shape, plus `reasoning` and per-step `usage`.

    `content` is None (assistant turn with only tool calls), a string, or a list of parts
    (`{"type": "text", "text": ...}` and friends), exactly as OpenAI-style APIs accept it.
    """

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning: str | None = None
    usage: Usage | None = None

    @property
    def text(self) -> str:
        """The content as plain text (text parts joined)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.get("text", "") for p in self.content if isinstance(p, dict))

    def to_openai(self, dict_arguments: bool = False) -> dict[str, Any]:
        """The message as an OpenAI request expects it: tool-call arguments as JSON strings,
        or as dicts (`dict_arguments`) the way chat templates index into them. Arguments that
        did not parse are passed on as their raw text either way."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.name is not None:
            out["name"] = self.name
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.function.name,
                        "arguments": _wire_arguments(c.function, dict_arguments),
                    },
                }
                for c in self.tool_calls
            ]
        return out


def _wire_arguments(fc: FunctionCall, as_dict: bool) -> str | dict[str, Any] | None:
    if fc.arguments is None:
        return fc.raw_arguments
    return fc.arguments if as_dict else orjson.dumps(fc.arguments).decode()


class Provenance(Record):
    """Where a record came from: the source, and for generated records the run that made it."""

    source: str
    file: str | None = None
    source_id: str | None = None
    run_id: str | None = None
    config_fingerprint: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)


class ExpectedCall(Record):
    """A tool call a task expects. Calls with the same `step` may come in any order (parallel
    calls); a higher step must come after every lower one (it depends on their results)."""

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    step: int = 0


class Task(Record):
    """A task: prompt messages, an optional ground truth, and the tools the agent may use.

    `id` is a hash of the content that defines the task (prompt, ground truth, tools),
    so the same task read twice, or from two files, is recognised as one.
    """

    id: str
    prompt: list[Message]
    ground_truth: Any = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    # None: not specified. []: the right behaviour is NO tool call (answer directly, or ask the
    # user for a missing argument when metadata["ask_for"] names it).
    expected_calls: list[ExpectedCall] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance = Field(default_factory=lambda: Provenance(source="inline"))
    # "train" | "validation", decided by a hash of `id` (export.splits.task_split) so a task
    # never changes side as its source grows; None when the source did not assign one.
    split: str | None = None

    @staticmethod
    def compute_id(prompt: list[Message], ground_truth: Any, tools: list[dict[str, Any]]) -> str:
        return content_hash(
            {"prompt": [m.to_dict() for m in prompt], "ground_truth": ground_truth, "tools": tools}
        )

    @classmethod
    def create(
        cls,
        prompt: str | list[Message],
        ground_truth: Any = None,
        tools: list[dict[str, Any]] | None = None,
        system: str | None = None,
        **kw: Any,
    ) -> Task:
        """Build a task with its content-hashed id from a prompt string or messages."""
        messages = (
            [Message(role="user", content=prompt)] if isinstance(prompt, str) else list(prompt)
        )
        if system is not None:
            messages.insert(0, Message(role="system", content=system))
        tools = tools or []
        return cls(
            id=cls.compute_id(messages, ground_truth, tools),
            prompt=messages,
            ground_truth=ground_truth,
            tools=tools,
            **kw,
        )

    @property
    def query(self) -> str:
        """The text of the last user message."""
        for m in reversed(self.prompt):
            if m.role == "user":
                return m.text
        return ""


class SamplingParams(Record):
    """Generation parameters, as in the OpenAI chat API."""

    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(default=512, ge=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    # "auto" | "required" | "none" | the name of one offered function
    tool_choice: str = "auto"


class Verdict(Record):
    """An LLM judge's verdict on a trajectory."""

    judge: str
    verdict: Literal["GOOD", "BAD", "ERROR"]
    reason: str = ""
    raw: str | None = None


Status = Literal["ok", "failed"]


class AgentStats(Record):
    """What happened inside one agent loop."""

    steps: int = 0
    tool_calls: int = 0
    malformed_calls: int = 0
    unknown_tool_calls: int = 0
    tool_errors: int = 0
    by_tool: dict[str, int] = Field(default_factory=dict)


class Trajectory(Record):
    """One sampled attempt at a task: the full message list and everything known about it."""

    id: str
    task_id: str
    sample_index: int = 0
    messages: list[Message]
    tools: list[dict[str, Any]] = Field(default_factory=list)  # the tool schemas offered
    final_answer: str | None = None
    rewards: dict[str, float] = Field(default_factory=dict)
    verdicts: list[Verdict] = Field(default_factory=list)
    agent: AgentStats | None = None
    status: Status = "ok"
    stop_reason: str = "stop"
    usage: Usage = Field(default_factory=Usage)
    latency_s: float = 0.0
    model: str | None = None
    backend: str | None = None
    params: SamplingParams | None = None
    provenance: Provenance = Field(default_factory=lambda: Provenance(source="inline"))
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)

    @staticmethod
    def make_id(task_id: str, sample_index: int, fingerprint: str | None) -> str:
        return content_hash([task_id, sample_index, fingerprint])

    @property
    def key(self) -> str:
        """The work-unit key a run uses for resume: one per (task, sample)."""
        return f"{self.task_id}#{self.sample_index}"
