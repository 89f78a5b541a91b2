"""mini-swe-agent trajectory files (`*.traj.json`) -> one `Trajectory` per file.

`path` is one file or a folder searched recursively. Both file formats are read:

- 1.x (`trajectory_format: "mini-swe-agent-1"`): the text protocol. Assistant messages hold
  a THOUGHT and a fenced ```bash block; the next `user` message is its observation; the
  last `user` message holds the submission.
- 2.x (`"mini-swe-agent-1.1"`): the model's native messages plus `extra`: tool calls with
  `tool` results, text-based models (`extra.actions: [{command}]`, `user` observations
  carrying `extra.returncode`), Responses-API models (raw `{"object": "response"}` messages
  and `function_call_output` items), and a final `role: exit` message.

What we make of it: the text stays exactly as written AND every executed action becomes a
`bash` tool call (`{"command": ...}`) answered by a `tool` message holding the observation
text, so one trajectory exports both as text-protocol and as tool-calling data (1.x blocks
become calls only when the agent executed them: exactly one block per message). Format-error
and other interrupt messages stay `user` messages. The exit message of a submitted run
answers a submitting call that has no result yet (as 2.x batch runs leave it); otherwise it
is kept as `metadata["exit_message"]`. The final answer is the submission (usually a git
diff); the query is the task message (`metadata["query_index"]`). Exit status, submission,
instance id, model stats, versions and the configured model name go into metadata and
provenance. A file that is not JSON or holds no messages is a counted skip naming it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import BadRecord, UserError
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.chatlogs import agent_stats, content, reasoning, tool_calls, usage_of
from agentmill.records import (
    FunctionCall,
    Message,
    Provenance,
    Task,
    ToolCall,
    Trajectory,
    Usage,
    content_hash,
)

SOURCE = "mini-swe"
V1_FORMAT = "mini-swe-agent-1"
SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")
V1_ACTION = r"```bash\s*\n(.*?)\n```"  # 1.x AgentConfig.action_regex default
_RETURNCODE = re.compile(r"<returncode>(-?\d+)</returncode>")
BASH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "bash",
        "description": "Execute a bash command",
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command to execute"}
            },
            "required": ["command"],
        },
    },
}


def read(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[Trajectory]:
    """One trajectory per `*.traj.json` file under `path` (or `path` itself)."""
    for file in trajectory_files(path):
        stats.read["files"] += 1
        try:
            traj = from_data(load(file), file, stats)
        except BadRecord as e:
            stats.skip(str(e), str(file), opts.strict)
            continue
        stats.built += 1
        yield traj


def trajectory_files(path: Path) -> Iterator[Path]:
    if path.is_file():
        yield path
        return
    files = sorted(path.rglob("*.traj.json"))
    if not files:
        raise UserError(
            f"no *.traj.json files under {path}; point at a mini-swe-agent output folder "
            "or at one trajectory file"
        )
    yield from files


def load(file: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(file.read_bytes())
    except (orjson.JSONDecodeError, OSError):
        raise BadRecord("unreadable trajectory file (not JSON)") from None
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
        raise BadRecord("not a mini-swe-agent trajectory (no messages list)")
    if not data["messages"]:
        raise BadRecord("empty trajectory (no messages)")
    return data


def from_data(data: dict[str, Any], file: Path, stats: IngestStats) -> Trajectory:
    """The trajectory of one decoded `.traj.json` file."""
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    conv = _Converter(v1=data.get("trajectory_format") == V1_FORMAT, info=info)
    for i, m in enumerate(data["messages"]):
        conv.add(m, i)
    conv.finish()
    stats.read["messages"] += len(data["messages"])
    return _build(data, info, conv, file)


# --- messages -------------------------------------------------------------------------------


class _Converter:
    """Walks the raw messages once, pairing observations with the calls they answer."""

    def __init__(self, v1: bool, info: dict[str, Any]):
        self.v1, self.info = v1, info
        self.messages: list[Message] = []
        self.pending: list[ToolCall] = []  # calls of the last assistant message not answered
        self.exit: dict[str, Any] | None = None
        self.exit_message: str | None = None
        self.tool_errors = 0
        self.native = self.responses = False
        self.timestamps: list[float] = []
        self.action = _action_regex(_dig(info, "config", "agent", "action_regex"))

    def add(self, m: Any, i: int) -> None:
        if not isinstance(m, dict):
            raise BadRecord("not a mini-swe-agent trajectory (a message is not an object)")
        self._timestamp(m)
        role = m.get("role")
        if m.get("object") == "response":
            self._response(m, i)
        elif m.get("type") == "function_call_output":
            self._result(m.get("call_id"), m.get("output"), m)
        elif role == "exit":
            self.exit = m
        elif role == "tool":
            self._result(m.get("tool_call_id"), m.get("content"), m)
        elif role == "user" and self.pending and (self.v1 or _is_observation(m)):
            self._result(None, m.get("content"), m)
        elif role == "assistant":
            self._assistant(m, i)
        elif role in ("system", "user"):
            self.messages.append(Message(role=role, content=content(_parts(m.get("content")))))
        else:
            raise BadRecord(f"unknown message role '{role}'")

    def _assistant(self, m: dict[str, Any], i: int) -> None:
        calls = tool_calls(m, i, {})
        self.native |= bool(calls)
        text = m.get("content") if isinstance(m.get("content"), str) else ""
        calls = calls or _actions(_dig(m, "extra", "actions"), i)
        if not calls and self.v1:
            blocks = self.action.findall(text)
            calls = [_bash(blocks[0].strip(), f"call_{i}_0")] if len(blocks) == 1 else []
        usage = usage_of(_dig(m, "extra", "response", "usage"))
        self._append_assistant(content(_parts(m.get("content"))), calls, reasoning(m), usage)

    def _response(self, m: dict[str, Any], i: int) -> None:
        """A raw Responses-API object: message text, reasoning summaries, function calls."""
        self.responses = True
        texts, thoughts, calls = [], [], []
        for k, item in enumerate(o for o in m.get("output") or [] if isinstance(o, dict)):
            kind = item.get("type")
            if kind == "message":
                texts += [_part_text(p) for p in item.get("content") or []]
            elif kind == "reasoning":
                parts = [*(item.get("summary") or []), *(item.get("content") or [])]
                thoughts += [_part_text(p) for p in parts]
            elif kind == "function_call":
                call_id = item.get("call_id") or item.get("id") or f"call_{i}_{k}"
                fc = FunctionCall.parse(str(item.get("name")), item.get("arguments"))
                calls.append(ToolCall(id=str(call_id), function=fc))
        text, thought = "\n".join(t for t in texts if t), "\n".join(t for t in thoughts if t)
        self._append_assistant(text or None, calls, thought or None, usage_of(m.get("usage")))

    def _append_assistant(
        self, body: Any, calls: list[ToolCall], thought: str | None, usage: Usage
    ) -> None:
        self.messages.append(
            Message(
                role="assistant",
                content=body,
                tool_calls=calls or None,
                reasoning=thought,
                usage=usage if usage.total_tokens else None,
            )
        )
        self.pending = list(calls)

    def _result(self, call_id: Any, body: Any, m: dict[str, Any]) -> None:
        call = next((c for c in self.pending if c.id == call_id), None)
        if call is None and call_id is None and self.pending:
            call = self.pending[0]
        if call is not None:
            self.pending.remove(call)
        body = content(_parts(body))
        answered = str(call_id) if call_id is not None else (call.id if call else "unknown")
        self.messages.append(Message(role="tool", content=body, tool_call_id=answered))
        self.tool_errors += _failed(m, body)

    def _timestamp(self, m: dict[str, Any]) -> None:
        value = m.get("timestamp", _dig(m, "extra", "timestamp"))
        if isinstance(value, int | float):
            self.timestamps.append(float(value))

    def finish(self) -> None:
        """Place the exit message (2.x) or the terminal user message (1.x)."""
        status, exit_body = exit_status(self.info, self.exit), None
        if self.exit is not None:
            exit_body = self.exit.get("content")
            if status == "Submitted" and self.pending:
                self._result(_submitting(self.pending).id, exit_body, self.exit)
                exit_body = None
        elif self.v1 and status and len(self.messages) > 2 and self.messages[-1].role == "user":
            exit_body = self.messages.pop().text  # str(exception) of a terminating exception
        if (
            isinstance(exit_body, str)
            and exit_body
            and exit_body != submission(self.info, self.exit)
        ):
            self.exit_message = exit_body

    @property
    def action_format(self) -> str:
        return "responses" if self.responses else "tool_calls" if self.native else "text"


def _is_observation(m: dict[str, Any]) -> bool:
    """A 2.x text-based observation (a format error or interrupt has no returncode)."""
    extra = m.get("extra")
    return isinstance(extra, dict) and ("returncode" in extra or "raw_output" in extra)


def _actions(raw: Any, i: int) -> list[ToolCall]:
    """2.x `extra.actions` ([{command, tool_call_id?}]) as bash calls."""
    out = []
    for k, a in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(a, dict) and isinstance(a.get("command"), str):
            out.append(_bash(a["command"], str(a.get("tool_call_id") or f"call_{i}_{k}")))
    return out


def _bash(command: str, call_id: str) -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name="bash", arguments={"command": command}))


def _submitting(calls: list[ToolCall]) -> ToolCall:
    """The call that printed the submit marker, else the last one."""
    for c in calls:
        command = str((c.function.arguments or {}).get("command", c.function.raw_arguments))
        if any(marker in command for marker in SUBMIT_MARKERS):
            return c
    return calls[-1]


def _failed(m: dict[str, Any], body: Any) -> bool:
    code = _dig(m, "extra", "returncode")
    if code is None and isinstance(body, str):
        found = _RETURNCODE.search(body)
        code = int(found.group(1)) if found else None
    return isinstance(code, int) and code != 0


def _parts(value: Any) -> Any:
    """Responses-API parts (`input_text`, `output_text`) as chat text parts."""
    if not isinstance(value, list):
        return value
    return [
        {"type": "text", "text": p.get("text", "")}
        if isinstance(p, dict) and p.get("type") in ("input_text", "output_text")
        else p
        for p in value
    ]


def _part_text(p: Any) -> str:
    return str(p.get("text", "")) if isinstance(p, dict) else str(p)


def _action_regex(raw: Any) -> re.Pattern[str]:
    try:
        return re.compile(raw if isinstance(raw, str) else V1_ACTION, re.DOTALL)
    except re.error:
        return re.compile(V1_ACTION, re.DOTALL)


def _dig(obj: Any, *keys: str) -> Any:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


# --- the record -----------------------------------------------------------------------------


def exit_status(info: dict[str, Any], exit_msg: dict[str, Any] | None) -> str | None:
    status = info.get("exit_status") or _dig(exit_msg, "extra", "exit_status")
    return str(status) if status else None


def submission(info: dict[str, Any], exit_msg: dict[str, Any] | None) -> str | None:
    value = info.get("submission") or _dig(exit_msg, "extra", "submission")
    return value if isinstance(value, str) and value.strip() else None


def _build(data: dict[str, Any], info: dict[str, Any], conv: _Converter, file: Path) -> Trajectory:
    messages, tools = conv.messages, [BASH_TOOL]
    query = next((i for i, m in enumerate(messages) if m.role == "user"), None)
    prompt = messages[: query + 1] if query is not None else []
    status = exit_status(info, conv.exit)
    agent = agent_stats(messages, tools)
    agent.tool_errors = conv.tool_errors
    stamps = conv.timestamps
    return Trajectory(
        id=content_hash([SOURCE, data.get("instance_id"), data["messages"]], 24),
        task_id=Task.compute_id(prompt, None, tools),
        messages=messages,
        tools=tools,
        final_answer=submission(info, conv.exit),
        agent=agent,
        status="failed" if "traceback" in info else "ok",
        stop_reason="answer" if status == "Submitted" else (status or "unknown"),
        usage=sum((m.usage for m in messages if m.usage), Usage()),
        latency_s=max(stamps) - min(stamps) if stamps else 0.0,
        model=_model_name(info),
        provenance=_provenance(data, info, file),
        metadata=_metadata(data, info, conv, query),
        created_at=min(stamps) if stamps else file.stat().st_mtime,
    )


def _model_name(info: dict[str, Any]) -> str | None:
    name = _dig(info, "config", "model", "model_name")
    return str(name) if name else None


def _provenance(data: dict[str, Any], info: dict[str, Any], file: Path) -> Provenance:
    instance = data.get("instance_id")
    extra = {
        "trajectory_format": data.get("trajectory_format"),
        "mini_version": info.get("mini_version"),
        "model_name": _model_name(info),
        "instance_id": instance,
    }
    return Provenance(
        source=SOURCE,
        file=str(file),
        source_id=str(instance) if instance else file.name.removesuffix(".traj.json"),
        extra={k: v for k, v in extra.items() if v is not None},
    )


def _metadata(
    data: dict[str, Any], info: dict[str, Any], conv: _Converter, query: int | None
) -> dict[str, Any]:
    config = info.get("config") if isinstance(info.get("config"), dict) else {}
    out = {
        "instance_id": data.get("instance_id"),
        "exit_status": exit_status(info, conv.exit),
        "submission": submission(info, conv.exit),
        "exit_message": conv.exit_message,
        "model_stats": info.get("model_stats"),
        "mini_version": info.get("mini_version"),
        "trajectory_format": data.get("trajectory_format"),
        "model_name": _model_name(info),
        "agent_type": config.get("agent_type"),
        "model_type": config.get("model_type"),
        "environment_type": config.get("environment_type"),
        "error": info.get("exception_str"),
        "action_format": conv.action_format,
        "query_index": query,
    }
    return {k: v for k, v in out.items() if v is not None}
