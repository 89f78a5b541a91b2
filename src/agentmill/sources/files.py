"""Tasks from files: JSONL (or a JSON array), parquet, or a local HF dataset folder.

Columns map onto task fields through `field_map`; unmapped fields are auto-detected from
common names (`prompt`/`question`/`problem`/..., `answer`/`solution`/...). A row that cannot
become a task is yielded as a `Bad` item (skipped, written to failures, counted), never
raised: one bad record must not stop a good file.

>>> import json, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
>>> _ = p.write_text(json.dumps({"question": "2+2?", "answer": "4"}) + "\\nnot json\\n")
>>> items = list(iter_tasks(FileSourceConfig(path=p)))
>>> items[0].query, items[0].ground_truth, items[1].reason
('2+2?', '4', 'invalid_json')
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from agentmill.config import FieldMap, FileSourceConfig
from agentmill.errors import UserError
from agentmill.records import ExpectedCall, Message, Provenance, Task

PROMPT_NAMES = ("prompt", "question", "problem", "query", "instruction", "input")
ANSWER_NAMES = ("ground_truth", "answer", "solution", "reference", "target", "output")
MESSAGE_NAMES = ("messages",)


@dataclass
class Bad:
    """A record that could not become a task: where it is and why."""

    key: str
    reason: str
    detail: str


def iter_tasks(cfg: FileSourceConfig) -> Iterator[Task | Bad]:
    """Tasks (or `Bad` items) in file order, at most `cfg.limit` tasks."""
    count = 0
    for where, row in _iter_rows(cfg):
        item = row if isinstance(row, Bad) else _to_task(row, where, cfg)
        yield item
        if isinstance(item, Task):
            count += 1
            if cfg.limit is not None and count >= cfg.limit:
                return


def _detect_format(path: Path) -> str:
    if path.is_dir():
        return "hf"
    if path.suffix == ".parquet":
        return "parquet"
    return "jsonl"


def _iter_rows(cfg: FileSourceConfig) -> Iterator[tuple[str, dict[str, Any] | Bad]]:
    path = cfg.path
    if not path.exists():
        raise UserError(f"task file not found: {path}; check sources[].path in the config")
    fmt = cfg.format if cfg.format != "auto" else _detect_format(path)
    if fmt == "jsonl":
        yield from _jsonl_rows(path)
    elif fmt == "parquet":
        yield from _parquet_rows(path)
    else:
        yield from _hf_rows(path, cfg.split)


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, Any] | Bad]]:
    with path.open("rb") as f:
        head = f.read(1024).lstrip()
    if head.startswith(b"["):  # a JSON array file
        try:
            rows = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise UserError(
                f"{path}: not valid JSON ({e}); fix the file or write one task per line"
            ) from None
        for i, row in enumerate(rows):
            where = f"{path}:[{i}]"
            yield (
                where,
                row if isinstance(row, dict) else Bad(where, "not_an_object", type(row).__name__),
            )
        return
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                yield where, Bad(where, "invalid_json", str(e))
                continue
            yield (
                where,
                row if isinstance(row, dict) else Bad(where, "not_an_object", type(row).__name__),
            )


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise UserError(
            f"{path}: not a readable parquet file ({e}); check the path and format"
        ) from None
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield f"{path}:row{i}", row
            i += 1


def _hf_rows(path: Path, split: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:
        raise UserError(
            "reading a HF dataset folder needs `datasets`: pip install 'agentmill[hf]'"
        ) from None
    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as e:  # datasets raises many kinds for a folder it cannot read
        raise UserError(f"{path}: not a readable dataset folder ({e})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        pick = split or ("train" if "train" in names else names[0] if len(names) == 1 else None)
        if pick not in ds:
            raise UserError(
                f"{path}: choose a split with sources[].split (have: {', '.join(names)})"
            )
        ds = ds[pick]
    for i, row in enumerate(ds):
        yield f"{path}:row{i}", row


def _pick(row: dict[str, Any], explicit: str | None, names: tuple[str, ...]) -> str | None:
    if explicit is not None:
        return explicit
    return next((n for n in names if n in row and row[n] is not None), None)


def _messages(value: Any) -> list[Message]:
    if isinstance(value, str):
        value = orjson.loads(value)
    if not isinstance(value, list) or not value:
        raise ValueError("messages must be a non-empty list")
    return [Message.model_validate(m) for m in value]


def _tools(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str):
        value = orjson.loads(value)
    tools = []
    for t in value:
        if "function" not in t and "name" in t:  # a bare function schema
            t = {"type": "function", "function": t}
        if not isinstance(t.get("function"), dict) or "name" not in t["function"]:
            raise ValueError("each tool must be {type: function, function: {name, parameters}}")
        tools.append(t)
    return tools


def _to_task(row: dict[str, Any], where: str, cfg: FileSourceConfig) -> Task | Bad:
    fm: FieldMap = cfg.field_map
    try:
        return _build(row, where, cfg, fm)
    except KeyError as e:
        return Bad(where, "missing_field", f"column {e} not in record (columns: {', '.join(row)})")
    except (ValueError, TypeError, ValidationError, orjson.JSONDecodeError) as e:
        return Bad(where, "bad_field", str(e).splitlines()[0])


def _build(row: dict[str, Any], where: str, cfg: FileSourceConfig, fm: FieldMap) -> Task | Bad:
    msg_col = _pick(row, fm.messages, MESSAGE_NAMES)
    prompt_col = None if msg_col else _pick(row, fm.prompt, PROMPT_NAMES)
    if msg_col is None and prompt_col is None:
        return Bad(
            where,
            "missing_field",
            "no prompt: expected a column named one of "
            f"{', '.join(PROMPT_NAMES + MESSAGE_NAMES)}, or set field_map.prompt",
        )
    answer_col = _pick(row, fm.ground_truth, ANSWER_NAMES)
    ground_truth = row[answer_col] if answer_col else None
    value = row[msg_col or prompt_col]  # type: ignore[index]
    if isinstance(value, str) and not msg_col:
        prompt = [Message(role="user", content=value)]
    else:
        prompt = _messages(value)
    if prompt[-1].role == "assistant":  # a trailing answer is the reference, not the prompt
        ground_truth = prompt.pop().text if ground_truth is None else ground_truth
    if not any(m.role == "user" for m in prompt):
        return Bad(where, "bad_field", "the prompt has no user message")
    system_col = _pick(row, fm.system, ("system",))
    system = row[system_col] if system_col else cfg.system_prompt
    if system and prompt[0].role != "system":
        prompt.insert(0, Message(role="system", content=system))
    tools = _tools(row.get(fm.tools or "tools"))
    id_col = _pick(row, fm.id, ("id",))
    expected = _expected_calls(row.get("expected_calls"))  # e.g. tasks `agentmill synth` wrote
    used = {msg_col, prompt_col, answer_col, system_col, fm.tools or "tools", id_col}
    used.add("expected_calls")
    metadata = {k: v for k, v in row.items() if k not in used}
    prov = Provenance(
        source="file",
        file=str(cfg.path),
        source_id=str(row[id_col]) if id_col else None,
        extra={"where": where},
    )
    return Task(
        id=Task.compute_id(prompt, ground_truth, tools),
        prompt=prompt,
        ground_truth=ground_truth,
        tools=tools,
        expected_calls=expected,
        metadata=metadata,
        provenance=prov,
    )


def _expected_calls(value: Any) -> list[ExpectedCall] | None:
    """The `tool_call` reward's expected calls: a list (or its JSON text); [] means no call."""
    if value is None:
        return None
    if isinstance(value, str):
        value = orjson.loads(value)
    if not isinstance(value, list):
        raise ValueError("expected_calls must be a list of {name, arguments, step}")
    return [ExpectedCall.model_validate(c) for c in value]
