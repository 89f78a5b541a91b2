"""The astuner feedback-training config, accepted as is and mapped onto a `RunConfig`.

    task_reader:                      # at the top level, or under `astuner:`
      type: tracing
      feedback_tracing:
        base_url: ./database.sqlite   # the AgentScope Studio file
        train_output_path: ./tasks.jsonl
        alien_llm_model: qwen3-235b-a22b-instruct-2507
        alien_llm_response_length: 2048
        filters:
          - {type: llm_evaluate, enabled: true, params: {custom_rubrics: "...", temperature: 0.5,
                                                         print_reason: false, max_thread: 16}}
          - {type: deduplication, enabled: true, params: {similarity_threshold: 0.8}}

becomes a trace source (agentscope-studio at base_url), a judge on the backend `judge`
(model = alien_llm_model, max_tokens = alien_llm_response_length), a dedup stage on the
query, and a `tasks_out` in astuner's task-line shape at train_output_path. The judge's
endpoint comes from `backends.judge` in an agentmill config given alongside
(`-c endpoint.yaml`), else from OPENAI_BASE_URL / OPENAI_API_BASE (key: OPENAI_API_KEY).
Other agentmill keys in the same file (or `-c` overrides) are merged over the mapping.
Relative paths are taken from the working directory, as astuner does; an input file not
found there is looked for beside the config file. The table is in docs/feedback.md.

>>> cfg, notes = from_astuner({"task_reader": {"type": "tracing", "feedback_tracing": {
...     "base_url": "db.sqlite", "train_output_path": "t.jsonl", "filters": []}}}, Path("."))
>>> cfg["sources"][0]["format"], cfg["tasks_out"]["format"], "judge" in cfg
('agentscope-studio', 'astuner', False)
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agentmill.errors import UserError
from agentmill.records import Task

FEEDBACK_KEYS = (
    "base_url",
    "train_output_path",
    "alien_llm_model",
    "alien_llm_response_length",
    "filters",
)
FILTER_PARAMS = {
    "llm_evaluate": ("custom_rubrics", "temperature", "print_reason", "max_thread"),
    "deduplication": ("similarity_threshold",),
}
URL_VARS = ("OPENAI_BASE_URL", "OPENAI_API_BASE")
KEY_VAR = "OPENAI_API_KEY"


def is_astuner(data: Mapping[str, Any]) -> bool:
    """True for a config in astuner's shape (`task_reader`, or everything under `astuner`)."""
    return "task_reader" in data or "astuner" in data


def from_astuner(
    data: dict[str, Any], config_dir: Path, env: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The agentmill run-config dict for an astuner config, and notes on what was ignored."""
    env = os.environ if env is None else env
    reader, rest, notes = _split(data)
    ft = _feedback_tracing(reader)
    mapped: dict[str, Any] = {
        "name": "feedback",
        "sources": [_source(ft, config_dir)],
        "tasks_out": {"path": _req(ft, "train_output_path"), "format": "astuner"},
    }
    for f in _filters(ft):
        mapped |= _map_filter(f, ft, rest, env)
    return _merge(mapped, rest), notes


# ---------------------------------------------------------------- reading the shape
def _split(data: dict[str, Any]) -> tuple[Any, dict[str, Any], list[str]]:
    """(task_reader, the other top-level keys, notes)."""
    rest = {k: v for k, v in data.items() if k not in ("task_reader", "astuner")}
    if "astuner" not in data:
        return data["task_reader"], rest, []
    block = data["astuner"]
    if not isinstance(block, dict) or "task_reader" not in block or "task_reader" in data:
        raise UserError(
            "astuner config: expected `astuner.task_reader` (and no top-level task_reader); "
            "put the task_reader section under astuner:"
        )
    ignored = sorted(k for k in block if k != "task_reader")
    notes = (
        [f"ignored astuner keys (agentmill reads astuner.task_reader only): {', '.join(ignored)}"]
        if ignored
        else []
    )
    return block["task_reader"], rest, notes


def _feedback_tracing(reader: Any) -> dict[str, Any]:
    kind = reader.get("type") if isinstance(reader, dict) else None
    if kind != "tracing":
        raise UserError(
            f"task_reader.type {kind!r} is not supported; agentmill reads `type: tracing` "
            "(feedback_tracing); for task files write an agentmill config with sources:"
        )
    ft = reader.get("feedback_tracing")
    if not isinstance(ft, dict):
        raise UserError(
            "task_reader.feedback_tracing is missing; add it with base_url and train_output_path"
        )
    _only(ft, FEEDBACK_KEYS, "task_reader.feedback_tracing")
    return ft


def _only(d: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise UserError(f"unknown key '{where}.{unknown[0]}' (allowed here: {', '.join(allowed)})")


def _req(ft: dict[str, Any], key: str) -> Any:
    if ft.get(key) in (None, ""):
        raise UserError(f"task_reader.feedback_tracing.{key} is missing; add it")
    return ft[key]


def _filters(ft: dict[str, Any]) -> list[dict[str, Any]]:
    """The enabled filters, each checked for its type and parameter names."""
    out = []
    for i, f in enumerate(ft.get("filters") or []):
        where = f"task_reader.feedback_tracing.filters.{i}"
        kind = f.get("type") if isinstance(f, dict) else None
        if kind not in FILTER_PARAMS:
            raise UserError(
                f"{where}.type {kind!r} is unknown (one of: {', '.join(FILTER_PARAMS)})"
            )
        _only(f, ("type", "enabled", "params"), where)
        _only(f.get("params") or {}, FILTER_PARAMS[kind], f"{where}.params")
        if f.get("enabled", True):
            out.append(f)
    return out


# ---------------------------------------------------------------- mapping
def _source(ft: dict[str, Any], config_dir: Path) -> dict[str, Any]:
    path = Path(str(_req(ft, "base_url"))).expanduser()
    if not path.is_absolute() and not path.exists() and (config_dir / path).exists():
        path = config_dir / path
    return {"type": "traces", "format": "agentscope-studio", "path": str(path.absolute())}


def _map_filter(
    f: dict[str, Any], ft: dict[str, Any], rest: dict[str, Any], env: Mapping[str, str]
) -> dict[str, Any]:
    params = f.get("params") or {}
    if f["type"] == "deduplication":
        return {"dedup": {"field": "query", "threshold": params.get("similarity_threshold", 0.8)}}
    judge = {
        k: params[p]
        for p, k in (
            ("custom_rubrics", "custom_rubrics"),
            ("temperature", "temperature"),
            ("print_reason", "print_reason"),
            ("max_thread", "max_concurrency"),
        )
        if params.get(p) is not None
    }
    if ft.get("alien_llm_response_length") is not None:
        judge["max_tokens"] = ft["alien_llm_response_length"]
    return {"judge": {"backend": "judge", **judge}, "backends": {"judge": _endpoint(ft, rest, env)}}


def _endpoint(ft: dict[str, Any], rest: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The judge backend: `backends.judge` given alongside wins over the environment."""
    model = ft.get("alien_llm_model")
    given = (rest.get("backends") or {}).get("judge")
    if isinstance(given, dict):
        return {"type": "openai", **({"model": model} if model else {}), **given}
    url = next((env[v] for v in URL_VARS if env.get(v)), None)
    if url is None:
        raise UserError(
            f"no endpoint for the judge model {model!r}: export OPENAI_BASE_URL (and "
            "OPENAI_API_KEY), or pass -c endpoint.yaml with backends.judge {type, base_url, model}"
        )
    if not model:
        raise UserError(
            "task_reader.feedback_tracing.alien_llm_model is missing; name the judge model"
        )
    out = {"type": "openai", "base_url": url, "model": model}
    return out | ({"api_key_env": KEY_VAR} if env.get(KEY_VAR) else {})


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# ---------------------------------------------------------------- astuner's task lines
def qa_hash(query: str, answer: str) -> str:
    """astuner's task key: sha256 of query, newline, answer.

    >>> qa_hash("q", "a")[:12]
    '27d2d5c8276a'
    """
    return hashlib.sha256(f"{query}\n{answer}".encode()).hexdigest()


def task_qa_hash(task: Task) -> str:
    """The task's `metadata.qa_hash`, else computed from its query and ground truth."""
    known = task.metadata.get("qa_hash")
    return str(known) if known else qa_hash(task.query, _answer(task))


def _answer(task: Task) -> str:
    gt = task.ground_truth
    return "" if gt is None else gt if isinstance(gt, str) else str(gt)


def astuner_line(task: Task, env_type: str = "tracing") -> dict[str, Any]:
    """One task in the shape astuner's trainer reads, plus our `split`."""
    last_user = max((i for i, m in enumerate(task.prompt) if m.role == "user"), default=0)
    return {
        "main_query": task.query,
        "init_messages": [m.to_openai() for m in task.prompt[:last_user]],
        "task_id": task.id,
        "env_type": env_type,
        "metadata": {"answer": _answer(task), "qa_hash": task_qa_hash(task)},
        "split": task.split,
    }
