"""The score / filter / export stages on plain files, for `agentmill score|filter|export`.

Input is a JSONL file of trajectories or a run folder (its latest stage output). A line that
is not a valid trajectory is skipped and counted by reason (exit 0), unless `strict`.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import ValidationError

from agentmill.curation.configs import FilterConfig
from agentmill.curation.filters import drop_reason
from agentmill.errors import UserError
from agentmill.export import TASK_FORMATS
from agentmill.export.configs import ExportConfig
from agentmill.records import Task, Trajectory
from agentmill.scoring import build_reward
from agentmill.scoring.configs import ScoreConfig
from agentmill.scoring.stage import score_trajectory
from agentmill.store import MANIFEST, iter_jsonl, write_atomic

# Latest first: a run folder's newest stage output is what file commands read.
STAGE_ORDER = ("balance", "decontaminate", "dedup", "judge", "filter", "score", "rollout")


@dataclass
class FileResult:
    read: int = 0
    written: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    out: Path | None = None
    files: dict[Path, int] = field(default_factory=dict)  # export: file -> records
    notes: list[str] = field(default_factory=list)  # export: caveats found in the output


def resolve_input(path: Path) -> Path:
    """A trajectories file, or a run folder's latest stage output."""
    if path.is_dir():
        for stage in STAGE_ORDER:
            if (path / stage / "records.jsonl").exists():
                return path / stage / "records.jsonl"
        raise UserError(
            f"{path} has no trajectories; pass a .jsonl file or a run folder that has run"
        )
    if not path.exists():
        raise UserError(f"file not found: {path}")
    return path


def read_trajectories(path: Path, result: FileResult, strict: bool = False) -> list[Trajectory]:
    out = []
    src = resolve_input(path)
    for n, line in iter_jsonl(src):
        result.read += 1
        try:
            out.append(Trajectory.model_validate(orjson.loads(line)))
        except (orjson.JSONDecodeError, ValidationError) as e:
            reason = "invalid_json" if isinstance(e, orjson.JSONDecodeError) else "not_a_trajectory"
            if strict:
                raise UserError(f"{src}:{n}: {reason}; fix the line or drop --strict") from None
            result.bad[reason] += 1
    return out


def read_tasks(path: Path | None, trajectories_path: Path) -> dict[str, Task]:
    """Tasks by id: from `path`, else from the run folder the trajectories came from."""
    if path is None:
        src = resolve_input(trajectories_path)
        candidate = src.parent.parent / "source" / "records.jsonl"
        path = candidate if candidate.exists() else None
    if path is None:
        return {}
    tasks = {}
    for _, line in iter_jsonl(path):
        task = Task.model_validate(orjson.loads(line))
        tasks[task.id] = task
    return tasks


def _write(out: Path, lines: list[bytes]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, b"".join(lines))


def score_file(
    src: Path, out: Path, rewards: list[str], tasks_path: Path | None = None, strict: bool = False
) -> FileResult:
    try:
        cfg = ScoreConfig.model_validate({"rewards": rewards})
    except ValidationError as e:
        raise UserError(
            f"--reward: {e.errors()[0]['msg']} (known: math, code, tool_call, format, "
            "exact, contains, regex)"
        ) from None
    result = FileResult(out=out)
    trajs = read_trajectories(src, result, strict)
    tasks = read_tasks(tasks_path, src)
    scorers = [build_reward(c) for c in cfg.rewards]

    async def go() -> list[Trajectory]:
        return await asyncio.gather(
            *(score_trajectory(t, tasks.get(t.task_id), scorers) for t in trajs)
        )

    scored = asyncio.run(go())
    _write(out, [t.to_json() + b"\n" for t in scored])
    result.written = len(scored)
    return result


def filter_file(src: Path, out: Path, cfg: FilterConfig, strict: bool = False) -> FileResult:
    result = FileResult(out=out)
    kept, dropped = [], []
    for t in read_trajectories(src, result, strict):
        reason = drop_reason(t, cfg)
        if reason is None:
            kept.append(t.to_json() + b"\n")
        else:
            result.dropped[reason] += 1
            dropped.append(orjson.dumps({"reason": reason, "record": t.to_dict()}) + b"\n")
    _write(out, kept)
    _write(out.with_name(out.stem + ".dropped.jsonl"), dropped)
    result.written = len(kept)
    return result


def _run_root(src: Path) -> Path | None:
    """The run folder `src` is, or is a stage file of (`<run>/<stage>/records.jsonl`)."""
    for root in (src, src.parent.parent):
        if (root / MANIFEST).exists():
            return root
    return None


def _read_task_file(path: Path, result: FileResult, strict: bool) -> dict[str, Task]:
    if not path.is_file():
        raise UserError(f"tasks file not found: {path}; pass an existing --tasks file")
    tasks = {}
    for n, line in iter_jsonl(path):
        try:
            task = Task.model_validate(orjson.loads(line))
        except (orjson.JSONDecodeError, ValidationError):
            if strict:
                raise UserError(f"{path}:{n}: not_a_task; fix the line or drop --strict") from None
            result.bad["not_a_task"] += 1
            continue
        tasks[task.id] = task
    return tasks


def export_tasks(
    src: Path, tasks_path: Path | None, fmt: str, result: FileResult, strict: bool
) -> dict[str, Task]:
    """The tasks of an export: `--tasks`, else the run's, else (verl, trl-grpo) `src` itself."""
    root = _run_root(src)
    if tasks_path is None and root is not None and (root / "source" / "records.jsonl").exists():
        tasks_path = root / "source" / "records.jsonl"
    if tasks_path is None and fmt in TASK_FORMATS and src.is_file():
        tasks_path = src
    tasks = _read_task_file(tasks_path, result, strict) if tasks_path else {}
    if fmt in TASK_FORMATS and not tasks:
        raise UserError(
            f"--format {fmt} makes one row per task and found none: pass --tasks FILE (agentmill "
            "tasks, e.g. <run>/source/records.jsonl) or a run folder"
        )
    return tasks


def _trajectories_if_any(src: Path, tasks_path: Path | None) -> list[Trajectory]:
    if src == tasks_path or (src.is_file() and _run_root(src) is None and tasks_path is None):
        return []  # src is the tasks file itself
    try:
        return read_trajectories(src, FileResult())
    except UserError:  # a run folder without trajectories yet
        return []


def export_file(
    src: Path, out: Path, cfg: ExportConfig, tasks_path: Path | None = None, strict: bool = False
) -> FileResult:
    """`agentmill export`: one export of a trajectories file or run folder (see write_export)."""
    from agentmill.export.write import write_export

    result = FileResult(out=out)
    tasks = export_tasks(src, tasks_path, cfg.format, result, strict)
    if cfg.format in TASK_FORMATS:  # trajectories, when at hand, lend tasks their tools
        trajs, result.read = _trajectories_if_any(src, tasks_path), len(tasks)
    else:
        trajs = read_trajectories(src, result, strict)
    exported = write_export(cfg, trajs, tasks, out, _run_root(src))
    result.dropped.update(exported.skipped)
    result.files, result.notes = exported.written, exported.notes
    result.written = sum(exported.written.values())
    return result
