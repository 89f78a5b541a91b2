"""Trajectories as their canonical JSON dicts, built from plain dicts without the models.

Every trajectory line holds `Trajectory.model_validate(d).to_dict()`. Building the pydantic
models of a trajectory of eleven messages and dumping them again costs about 60 µs, a fifth
of a Studio ingest's CPU. The ingesters build their records as plain dicts of decoded JSON,
so `trajectory_dict(d)` gets the same dict a cheaper way: it checks every value's exact type
and orders the keys as the models declare their fields. Anything it cannot vouch for (a
value of another type, a key the model does not have, a missing field, a non-default value
of a field the ingesters never set) goes to pydantic instead, which coerces or raises
exactly as before, so the result is always the model's.

tests/test_canonical.py holds the two equal over generated records (valid and not) and
every ingest fixture, and fails when a model gains a field this module does not know.

>>> d = {"id": "t", "task_id": "k", "created_at": 1.5, "provenance": {"source": "x"},
...      "messages": [{"content": "hi", "role": "user", "name": None}]}
>>> trajectory_dict(d)["messages"], trajectory_dict(d)["usage"]
([{'role': 'user', 'content': 'hi'}], {'prompt_tokens': 0, 'completion_tokens': 0})
"""

from __future__ import annotations

import math
from typing import Any

from agentmill.records import Trajectory

ROLES = frozenset(("system", "user", "assistant", "tool"))
STATUSES = frozenset(("ok", "failed"))

# field names in declaration order, as `to_dict` writes them (the test checks the models)
TRAJECTORY_FIELDS = (
    "id", "task_id", "sample_index", "messages", "tools", "final_answer", "rewards",
    "verdicts", "agent", "status", "stop_reason", "usage", "latency_s", "model", "backend",
    "params", "provenance", "metadata", "created_at",
)  # fmt: skip
MESSAGE_FIELDS = ("role", "content", "name", "tool_calls", "tool_call_id", "reasoning", "usage")
TOOL_CALL_FIELDS = ("id", "type", "function")
FUNCTION_FIELDS = ("name", "arguments", "raw_arguments")
USAGE_FIELDS = ("prompt_tokens", "completion_tokens")
AGENT_FIELDS = ("steps", "tool_calls", "malformed_calls", "unknown_tool_calls", "tool_errors")
AGENT_FIELDS += ("by_tool",)
PROVENANCE_FIELDS = ("source", "file", "source_id", "run_id", "config_fingerprint", "extra")

_TRAJECTORY_KEYS = frozenset(TRAJECTORY_FIELDS)
_MESSAGE_KEYS = frozenset(MESSAGE_FIELDS)
_TOOL_CALL_KEYS = frozenset(TOOL_CALL_FIELDS)
_FUNCTION_KEYS = frozenset(FUNCTION_FIELDS)
_USAGE_KEYS = frozenset(USAGE_FIELDS)
_AGENT_KEYS = frozenset(AGENT_FIELDS)
_PROVENANCE_KEYS = frozenset(PROVENANCE_FIELDS)
_OPTIONAL_STR = ("file", "source_id", "run_id", "config_fingerprint")
_UNSET_BY_INGEST = (("rewards", {}), ("verdicts", []), ("backend", None), ("params", None))


class _Unvouched(Exception):
    """A value the fast path does not check: pydantic decides."""


def trajectory_dict(record: dict[str, Any]) -> dict[str, Any]:
    """`Trajectory.model_validate(record).to_dict()`, built without the models where every
    value has its exact type. Raises pydantic's ValidationError for an invalid record."""
    try:
        return _trajectory(record)
    except (_Unvouched, KeyError, TypeError, AttributeError):
        return Trajectory.model_validate(record).to_dict()


def _trajectory(r: dict[str, Any]) -> dict[str, Any]:
    if type(r) is not dict or not r.keys() <= _TRAJECTORY_KEYS:
        raise _Unvouched
    for key, default in _UNSET_BY_INGEST:  # fields no ingester sets: only their default
        if key in r and r[key] != default:
            raise _Unvouched
    out: dict[str, Any] = {
        "id": _str(r["id"]),
        "task_id": _str(r["task_id"]),
        "sample_index": _int(r.get("sample_index", 0)),
        "messages": [_message(m) for m in _list(r["messages"])],
        "tools": _dicts(r.get("tools", [])),
    }
    final = r.get("final_answer")
    if final is not None:
        out["final_answer"] = _str(final)
    out["rewards"], out["verdicts"] = {}, []
    agent = r.get("agent")
    if agent is not None:
        out["agent"] = _agent(agent)
    status = r.get("status", "ok")
    if type(status) is not str or status not in STATUSES:
        raise _Unvouched
    out["status"] = status
    out["stop_reason"] = _str(r.get("stop_reason", "stop"))
    out["usage"] = _usage(r.get("usage", {}))  # present as None: not a usage, pydantic says
    out["latency_s"] = _float(r.get("latency_s", 0.0))
    model = r.get("model")
    if model is not None:
        out["model"] = _str(model)
    out["provenance"] = _provenance(r["provenance"])
    out["metadata"] = _str_keys(r.get("metadata", {}))
    out["created_at"] = _float(r["created_at"])
    return out


def _message(m: Any) -> dict[str, Any]:
    if type(m) is not dict:
        raise _Unvouched
    role = m["role"]
    if type(role) is not str or role not in ROLES:
        raise _Unvouched
    if len(m) == 2 and type(m.get("content")) is str and next(iter(m)) == "role":
        return m  # {role, content}: already canonical (the most common message)
    if not m.keys() <= _MESSAGE_KEYS:
        raise _Unvouched
    out: dict[str, Any] = {"role": role}
    content = m.get("content")
    if content is not None:
        if type(content) is list:
            for part in content:
                _str_keys(part)
        elif type(content) is not str:
            raise _Unvouched
        out["content"] = content
    name = m.get("name")
    if name is not None:
        out["name"] = _str(name)
    calls = m.get("tool_calls")
    if calls is not None:
        out["tool_calls"] = [_call(c) for c in _list(calls)]
    for key in ("tool_call_id", "reasoning"):
        value = m.get(key)
        if value is not None:
            out[key] = _str(value)
    usage = m.get("usage")
    if usage is not None:
        out["usage"] = _usage(usage)
    return out


def _call(c: Any) -> dict[str, Any]:
    if (
        type(c) is not dict
        or not c.keys() <= _TOOL_CALL_KEYS
        or c.get("type", "function") != ("function")
    ):
        raise _Unvouched
    fn = c["function"]
    if type(fn) is not dict or not fn.keys() <= _FUNCTION_KEYS:
        raise _Unvouched
    out_fn: dict[str, Any] = {"name": _str(fn["name"])}
    arguments, raw = fn.get("arguments"), fn.get("raw_arguments")
    if arguments is not None:
        out_fn["arguments"] = _str_keys(arguments)
    if raw is not None:
        out_fn["raw_arguments"] = _str(raw)
    return {"id": _str(c["id"]), "type": "function", "function": out_fn}


def _usage(u: Any) -> dict[str, int]:
    if type(u) is not dict or not u.keys() <= _USAGE_KEYS:
        raise _Unvouched
    return {k: _int(u.get(k, 0)) for k in USAGE_FIELDS}


def _agent(a: Any) -> dict[str, Any]:
    if type(a) is not dict or not a.keys() <= _AGENT_KEYS:
        raise _Unvouched
    out: dict[str, Any] = {k: _int(a.get(k, 0)) for k in AGENT_FIELDS[:-1]}
    by_tool = _str_keys(a.get("by_tool", {}))
    for n in by_tool.values():
        _int(n)
    out["by_tool"] = by_tool
    return out


def _provenance(p: Any) -> dict[str, Any]:
    if type(p) is not dict or not p.keys() <= _PROVENANCE_KEYS:
        raise _Unvouched
    out: dict[str, Any] = {"source": _str(p["source"])}
    for key in _OPTIONAL_STR:
        value = p.get(key)
        if value is not None:
            out[key] = _str(value)
    out["extra"] = _str_keys(p.get("extra", {}))
    return out


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Unvouched
    return v


def _int(v: Any) -> int:
    if type(v) is not int:
        raise _Unvouched
    return v


def _float(v: Any) -> float:
    if type(v) is not float or not math.isfinite(v):
        raise _Unvouched
    return v


def _list(v: Any) -> list[Any]:
    if type(v) is not list:
        raise _Unvouched
    return v


def _str_keys(d: Any) -> dict[str, Any]:
    """A dict[str, Any]: a dict whose keys are strings (values are decoded JSON)."""
    if type(d) is not dict:
        raise _Unvouched
    for k in d:
        if type(k) is not str:
            raise _Unvouched
    return d


def _dicts(v: Any) -> list[dict[str, Any]]:
    for d in _list(v):
        _str_keys(d)
    return v
