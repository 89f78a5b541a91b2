"""Feedback runs: trace sources in, and the kept trajectories' tasks out.

A trace source (`sources: [{type: traces, format: agentscope-studio, path: ...}]`) reads the
production agent's trajectories (agentmill.ingest): nothing is sampled. Each trajectory is
written into the run's rollout stage, keyed by its id, so a resume or a top-up on a grown
trace database adds only the new ones; its task (`ingest.tasks.task_from_trajectory`: the
query and the final answer) goes to the source stage. Score, filter, judge, curation and
export then run as usual.

`tasks_out` appends the tasks of the kept trajectories to a file, one per `qa_hash`,
skipping the hashes already there, each with its train/validation `split`:

>>> tasks_path("{run}/tasks.jsonl", Path("/r")), tasks_path("/abs/t.jsonl", Path("/r"))
(PosixPath('/r/tasks.jsonl'), PosixPath('/abs/t.jsonl'))
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agentmill.astuner import astuner_line, task_qa_hash
from agentmill.export.splits import task_split
from agentmill.records import Task, Trajectory
from agentmill.sources.files import Bad
from agentmill.store import JsonlWriter, Stage

if TYPE_CHECKING:
    from agentmill.config import TasksOutConfig, TraceSourceConfig
    from agentmill.ingest import IngestOptions


@dataclass
class TraceCounts:
    """What the trace sources of a run gave: task ids, trajectories seen and newly stored."""

    task_ids: set[str] = field(default_factory=set)
    trajectories: int = 0
    new: int = 0


# ---------------------------------------------------------------- trace sources in
def _utc(d: datetime | None) -> datetime | None:
    return d.replace(tzinfo=UTC) if d is not None and d.tzinfo is None else d


def ingest_options(cfg: TraceSourceConfig) -> IngestOptions:
    from agentmill.ingest import IngestOptions

    return IngestOptions(
        projects=list(cfg.projects),
        runs=list(cfg.runs),
        since=_utc(cfg.since),
        until=_utc(cfg.until),
        logs=cfg.logs,
    )


def _redactor(cfg: TraceSourceConfig) -> Callable[[Trajectory], Trajectory]:
    if not cfg.redact:
        return lambda t: t
    from agentmill.ingest.redact import Redactor

    return Redactor(extra_patterns=cfg.redact_patterns).trajectory


def trace_items(
    cfg: TraceSourceConfig, rollout: Stage, counts: TraceCounts
) -> Iterator[Task | Bad]:
    """The tasks of the traces in `cfg` (or `Bad` items for traces that make no task),
    writing each trajectory not stored yet into `rollout` before its task is yielded."""
    from agentmill.ingest import IngestStats, read_traces
    from agentmill.ingest.tasks import task_from_trajectory

    stats = IngestStats()
    known = rollout.done_keys("id")
    redact = _redactor(cfg)
    taken = 0
    for t in read_traces(cfg.format, cfg.path, ingest_options(cfg), stats):
        t = redact(t)
        task = task_from_trajectory(t)
        if task is None:
            yield Bad(key=t.id, reason="trace_without_query_or_answer", detail=str(cfg.path))
            continue
        _store(t.model_copy(update={"task_id": task.id}), rollout, known, counts)
        counts.task_ids.add(task.id)
        yield task
        taken += 1
        if cfg.limit is not None and taken >= cfg.limit:
            return
    yield from _skips(cfg, stats.skipped, stats.examples)


def _store(t: Trajectory, rollout: Stage, known: set[str], counts: TraceCounts) -> None:
    counts.trajectories += 1
    if t.id in known:
        return
    rollout.writer().append(t.to_json())
    known.add(t.id)
    counts.new += 1


def _skips(
    cfg: TraceSourceConfig, skipped: Mapping[str, int], examples: Mapping[str, str]
) -> Iterator[Bad]:
    """One `Bad` per trace the ingester skipped, so the source stage counts them by reason."""
    for reason, n in skipped.items():
        for i in range(n):
            where = examples.get(reason, str(cfg.path))
            yield Bad(key=f"{cfg.path}#{reason}#{i}", reason=f"trace:{reason}", detail=where)


# ---------------------------------------------------------------- tasks out
def tasks_path(raw: str, run_dir: Path) -> Path:
    """`{run}/...` inside the run folder; otherwise absolute or relative to the CWD."""
    if raw.startswith("{run}"):
        return run_dir / raw.removeprefix("{run}").lstrip("/\\")
    return Path(raw).expanduser().absolute()


def kept_tasks(
    trajs: list[Trajectory], tasks: Mapping[str, Task], val_fraction: float
) -> list[Task]:
    """The tasks of `trajs` in order, one per qa_hash (exact dedup), each with its split."""
    seen: set[str] = set()
    out: list[Task] = []
    for t in trajs:
        task = tasks.get(t.task_id)
        h = task_qa_hash(task) if task is not None else None
        if task is None or h in seen:
            continue
        seen.add(h)
        update = {
            "split": task_split(task.id, val_fraction),
            "metadata": task.metadata | {"qa_hash": h},
        }
        out.append(task.model_copy(update=update))
    return out


def append_astuner(tasks: list[Task], path: Path, env_type: str) -> tuple[int, int]:
    """astuner task lines for the tasks whose qa_hash is not in `path` yet, one unbuffered
    write each; returns (added, already there)."""
    from agentmill.ingest.tasks import existing_hashes

    have = existing_hashes(path)
    new = [t for t in tasks if task_qa_hash(t) not in have]
    if new:
        writer = JsonlWriter(path)
        for t in new:
            writer.append(orjson.dumps(astuner_line(t, env_type)))
        writer.close()
    return len(new), len(tasks) - len(new)


def write_tasks_out(
    cfg: TasksOutConfig, trajs: list[Trajectory], tasks: Mapping[str, Task], run_dir: Path
) -> dict[str, Any]:
    """Append the kept trajectories' new tasks to `cfg.path`; returns what was written."""
    from agentmill.ingest.tasks import append_tasks

    path = tasks_path(cfg.path, run_dir)
    chosen = kept_tasks(trajs, tasks, cfg.val_fraction)
    out: dict[str, Any] = {"path": str(path), "tasks": len(chosen)}
    if cfg.format == "astuner":
        added, already = append_astuner(chosen, path, cfg.env_type)
        beside = path.with_name(path.stem + ".agentmill.jsonl")
        append_tasks(chosen, beside)
        out["agentmill_tasks"] = str(beside)
    else:
        added, already = append_tasks(chosen, path)
    return out | {"added": added, "already": already}
