"""`canonical.trajectory_dict` gives exactly the models' dict, without building the models.

The ingest writes these dicts as its lines, so they must equal what
`Trajectory.model_validate(record).to_dict()` gives for every record: on every format's
files, on generated records (valid and invalid), and when a model gains a field.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError
from studio_db import build_db, sample_run

from agentmill import canonical
from agentmill.ingest.base import IngestOptions, read_trace_dicts, read_traces
from agentmill.ingest.tasks import task_from_trajectory, task_record
from agentmill.records import (
    AgentStats,
    FunctionCall,
    Message,
    Provenance,
    Task,
    ToolCall,
    Trajectory,
    Usage,
)

FIXTURES = Path(__file__).parent / "fixtures"
STUDIO_STYLES = [
    ("old", "old", ""),
    ("migrated", "old", ""),
    ("new", "old", ""),
    ("new", "genai", "1.0.9"),
    ("new", "genai", "1.0.12"),
    ("new", "as2", "2.0.4"),
    ("new", "as2", "2.0.8"),
    ("new", "as2", "2.0.11"),
]


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (Trajectory, canonical.TRAJECTORY_FIELDS),
        (Message, canonical.MESSAGE_FIELDS),
        (ToolCall, canonical.TOOL_CALL_FIELDS),
        (FunctionCall, canonical.FUNCTION_FIELDS),
        (Usage, canonical.USAGE_FIELDS),
        (AgentStats, canonical.AGENT_FIELDS),
        (Provenance, canonical.PROVENANCE_FIELDS),
    ],
)
def test_the_fast_path_knows_every_field_of_the_models(
    model: type[BaseModel], fields: tuple[str, ...]
) -> None:
    """A field added to a model must be added to `canonical` too (or records would lose it)."""
    assert tuple(model.model_fields) == fields


def _files(tmp_path: Path) -> list[tuple[str, Path, IngestOptions]]:
    files = []
    for layout, protocol, version in STUDIO_STYLES:
        runs = [sample_run("run-1"), sample_run("run-2", project="shop")]
        path = tmp_path / f"{layout}-{protocol}-{version}.sqlite"
        files.append(("agentscope-studio", build_db(path, runs, layout, protocol, version), None))
    for traces in sorted((FIXTURES / "otel").glob("*.otlp.jsonl")):
        files.append(("otel", traces, None))
    logs = IngestOptions(logs=FIXTURES / "otel" / "json-format.logs.jsonl")
    files.append(("otel", FIXTURES / "otel" / "json-format.traces.jsonl", logs))
    for traj in sorted((FIXTURES / "miniswe").glob("*.traj.json")):
        files.append(("mini-swe", traj, None))
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        '{"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": '
        'null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", '
        '"arguments": "{\\"e\\": \\"2+2\\"}"}}]}, {"role": "tool", "tool_call_id": "c1", '
        '"content": "4"}, {"role": "assistant", "content": "4"}]}\n'
    )
    files.append(("chat-logs", chat, None))
    return files


def test_every_format_writes_the_models_dicts(tmp_path: Path) -> None:
    """The ingest's dicts, trajectories and tasks, equal the pydantic models' on every
    layout, attribute style and format in the fixtures."""
    records = 0
    for fmt, path, opts in _files(tmp_path):
        fast = list(read_trace_dicts(fmt, path, opts))
        slow = [t.to_dict() for t in read_traces(fmt, path, opts)]
        if fmt == "chat-logs":  # no times in the file: created_at is the time of reading
            for d in fast + slow:
                d["created_at"] = 0.0
        assert fast == slow, (fmt, path.name)
        for d, t in zip(fast, read_traces(fmt, path, opts), strict=True):
            task = task_from_trajectory(t)
            assert task_record(d) == (None if task is None else task.to_dict())
        records += len(fast)
    assert records >= 40


def _record(rng: random.Random) -> dict[str, Any]:
    """A plain-dict trajectory record of the kind the ingesters build, with optional keys,
    None values and key orders varied."""

    def maybe(value: Any) -> Any:
        return value if rng.random() < 0.7 else None

    def shuffled(d: dict[str, Any]) -> dict[str, Any]:
        items = list(d.items())
        rng.shuffle(items)
        return dict(items)

    messages = []
    for _ in range(rng.randint(0, 5)):
        role = rng.choice(["system", "user", "assistant", "tool"])
        m: dict[str, Any] = {
            "role": role,
            "content": rng.choice(["hi", None, [{"type": "text", "text": "x"}]]),
        }
        if role == "assistant" and rng.random() < 0.5:
            fn: dict[str, Any] = {"name": "calc"}
            if rng.random() < 0.5:
                fn["arguments"] = {"e": "1+1", "n": None}
            else:
                fn["raw_arguments"] = "{bad"
            m["tool_calls"] = [{"id": "c1", "type": "function", "function": shuffled(fn)}]
            m["usage"] = {"prompt_tokens": 3, "completion_tokens": 1}
            m["reasoning"] = maybe("because")
        if role == "tool":
            m["tool_call_id"] = "c1"
        if role == "user":
            m["name"] = maybe("bob")
        messages.append(shuffled(m))
    record = {
        "id": "t1",
        "task_id": "k1",
        "messages": messages,
        "tools": [{"type": "function", "function": {"name": "calc", "parameters": {}}}],
        "final_answer": maybe("2"),
        "agent": maybe({"steps": 1, "tool_calls": 1, "by_tool": {"calc": 1}}),
        "status": rng.choice(["ok", "failed"]),
        "stop_reason": "stop",
        "usage": maybe({"completion_tokens": 4, "prompt_tokens": 5}),
        "latency_s": rng.choice([0.5, 0.0]),
        "model": maybe("m"),
        "provenance": shuffled({"source": "otel", "file": maybe("f"), "extra": {"k": None}}),
        "metadata": {"prompt_check": "agree", "x": None},
        "created_at": 1.7e9,
    }
    for key in ("sample_index", "rewards", "verdicts", "backend", "params"):
        if rng.random() < 0.2:
            record[key] = {"sample_index": 0, "rewards": {}, "verdicts": []}.get(key)
    return shuffled(
        {k: v for k, v in record.items() if rng.random() < 0.95 or k in ("id", "created_at")}
    )


# values the fast path must hand to pydantic: coerced (int->float, bool->int), or invalid
_ODD = [1, True, 2.5, "7", None, float("inf"), [], {}, ("a",), b"x", {1: "a"}, "bogus"]


def _break(record: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """`record` with one value somewhere replaced by an odd one (or an unknown key added)."""
    out = copy.deepcopy(record)
    places: list[tuple[dict[str, Any], str]] = [(out, k) for k in out]
    for m in out.get("messages") or []:
        places += [(m, k) for k in m]
        for c in m.get("tool_calls") or []:
            places += [(c, k) for k in c] + [(c["function"], k) for k in c["function"]]
        if isinstance(m.get("usage"), dict):
            places += [(m["usage"], k) for k in m["usage"]]
    for sub in ("agent", "provenance", "usage"):
        if isinstance(out.get(sub), dict):
            places += [(out[sub], k) for k in out[sub]]
    where, key = rng.choice(places)
    if rng.random() < 0.1:
        where["unknown_key"] = 1
    else:
        where[key] = rng.choice(_ODD)
    return out


def _model_dict(record: dict[str, Any]) -> dict[str, Any] | type[ValidationError]:
    try:
        return Trajectory.model_validate(record).to_dict()
    except ValidationError:
        return ValidationError


def _fast_dict(record: dict[str, Any]) -> dict[str, Any] | type[ValidationError]:
    try:
        return canonical.trajectory_dict(record)
    except ValidationError:
        return ValidationError


def test_generated_records_valid_and_not_give_what_pydantic_gives() -> None:
    rng = random.Random(7)
    fast_path = broken = 0
    for _ in range(1500):
        record = _record(rng)
        if rng.random() < 0.5:
            record, broken = _break(record, rng), broken + 1
        expected = _model_dict(record)
        assert _fast_dict(record) == expected, record
        fast_path += expected is not ValidationError and _vouched(record)
    assert fast_path > 500 and broken > 500  # both paths were exercised


def _vouched(record: dict[str, Any]) -> bool:
    """Whether the fast path itself built the dict (no hand-over to pydantic)."""
    try:
        canonical._trajectory(record)
    except (canonical._Unvouched, KeyError, TypeError, AttributeError):
        return False
    return True


def test_an_invalid_record_raises_pydantics_error() -> None:
    record = {"id": "t", "task_id": "k", "messages": [{"role": "robot"}], "created_at": 1.0}
    with pytest.raises(ValidationError, match="role"):
        canonical.trajectory_dict(record)


def test_a_task_dict_is_canonical(tmp_path: Path) -> None:
    path = build_db(tmp_path / "db.sqlite", [sample_run()])
    tasks = [task_record(d) for d in read_trace_dicts("agentscope-studio", path)]
    assert tasks and all(t is not None for t in tasks)
    for t in tasks:
        assert Task.model_validate(t).to_dict() == t
