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
from agentmill.export import FORMATS
from agentmill.export.sharegpt import dataset_info_entry
from agentmill.records import Task, Trajectory
from agentmill.scoring import build_reward
from agentmill.scoring.configs import ScoreConfig
from agentmill.scoring.stage import score_trajectory
from agentmill.stages import export_lines
from agentmill.store import iter_jsonl, write_atomic

STAGE_ORDER = ("filter", "score", "rollout")


@dataclass
class FileResult:
    read: int = 0
    written: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    out: Path | None = None


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


def export_file(
    src: Path, out: Path, fmt: str, include_reasoning: bool = False, strict: bool = False
) -> FileResult:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: unknown export format (available: {', '.join(FORMATS)})")
    result = FileResult(out=out)
    lines, skipped = export_lines(read_trajectories(src, result, strict), include_reasoning, fmt)
    result.dropped.update(skipped)
    _write(out, lines)
    if fmt == "sharegpt":  # LLaMA-Factory finds the file through dataset_info.json beside it
        info = {out.stem: dataset_info_entry(out.name)}
        write_atomic(
            out.with_name("dataset_info.json"), orjson.dumps(info, option=orjson.OPT_INDENT_2)
        )
    result.written = len(lines)
    return result
