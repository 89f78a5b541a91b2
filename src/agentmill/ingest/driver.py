"""`ingest`: traces in one format -> a trajectories JSONL (+ a task file), resumable.

Trajectories are streamed from `read_traces`, redacted, and appended to `out` one line per
record with one unbuffered write; ids already in `out` are skipped, so a re-run, a killed
run or a run on a grown source adds only what is new and never rewrites a line (a torn last
line is cut off, kept aside in `<out>.torn`). With `tasks_out`, each trajectory's task
(`tasks.task_from_trajectory`) is appended there by `qa_hash` as the stream goes.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "log.jsonl").write_text('[{"role": "user", "content": "Hi"},'
...                                  ' {"role": "assistant", "content": "Hello!"}]\\n')
>>> s = ingest("chat-logs", d / "log.jsonl", d / "traj.jsonl", tasks_out=d / "tasks.jsonl")
>>> s.built, s.written, s.tasks_added
(1, 1, 1)
>>> s = ingest("chat-logs", d / "log.jsonl", d / "traj.jsonl", tasks_out=d / "tasks.jsonl")
>>> s.written, s.already_written, s.tasks_added, s.tasks_present
(0, 1, 0, 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.ingest.base import IngestOptions, IngestStats, read_traces
from agentmill.ingest.redact import Redactor
from agentmill.ingest.tasks import append_tasks, task_from_trajectory
from agentmill.records import Task, Trajectory
from agentmill.store import JsonlWriter, iter_jsonl

# option -> the formats it applies to (the CLI refuses it for the others)
OPTION_FORMATS: dict[str, tuple[str, ...]] = {
    "--project": ("agentscope-studio",),
    "--run": ("agentscope-studio", "otel"),
    "--since": ("agentscope-studio", "otel"),
    "--until": ("agentscope-studio", "otel"),
    "--logs": ("otel",),
}


@dataclass
class IngestSummary(IngestStats):
    """The ingester's counts plus what this command wrote."""

    written: int = 0  # new trajectory lines in `out`
    already_written: int = 0  # trajectories whose id was already in `out`
    tasks_added: int = 0
    tasks_present: int = 0  # tasks whose qa_hash was already in `tasks_out`
    without_task: int = 0  # trajectories with no query or no final answer

    def to_dict(self) -> dict[str, Any]:
        extra = ("written", "already_written", "tasks_added", "tasks_present", "without_task")
        return super().to_dict() | {k: getattr(self, k) for k in extra}


def ingest(
    fmt: str,
    path: Path,
    out: Path,
    tasks_out: Path | None = None,
    opts: IngestOptions | None = None,
    redactor: Redactor | None = None,
    val_fraction: float = 0.3,
) -> IngestSummary:
    """Read `path` as `fmt`, append new trajectories to `out` and new tasks to `tasks_out`."""
    _check_paths(path, out, tasks_out)
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(f"val_fraction {val_fraction} is out of range; use a number from 0 to 1")
    stats = IngestSummary()
    trajs = read_traces(fmt, path, opts or IngestOptions(), stats)
    writer = JsonlWriter(out)
    try:
        stored = _store(trajs, writer, known_ids(out), redactor, stats)
        tasks = _tasks(stored, val_fraction, stats)
        if tasks_out is None:
            for _ in tasks:
                pass
        else:
            stats.tasks_added, stats.tasks_present = append_tasks(tasks, tasks_out)
    finally:
        writer.close()
    return stats


def _store(
    trajs: Iterable[Trajectory],
    writer: JsonlWriter,
    known: set[str],
    redactor: Redactor | None,
    stats: IngestSummary,
) -> Iterator[Trajectory]:
    """Redact and append each trajectory not in `known`; yield every one (for its task)."""
    for t in trajs:
        if redactor is not None:
            t = redactor.trajectory(t)
        if t.id in known:
            stats.already_written += 1
        else:
            writer.append(t.to_json())
            known.add(t.id)
            stats.written += 1
        yield t


def _tasks(
    trajs: Iterable[Trajectory], val_fraction: float, stats: IngestSummary
) -> Iterator[Task]:
    for t in trajs:
        task = task_from_trajectory(t, val_fraction)
        if task is None:
            stats.without_task += 1
        else:
            yield task


def known_ids(path: Path) -> set[str]:
    """Ids of the trajectories already in `path` (complete lines only)."""
    ids: set[str] = set()
    for _, line in iter_jsonl(path):
        try:
            ids.add(str(orjson.loads(line)["id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return ids


def _check_paths(path: Path, out: Path, tasks_out: Path | None) -> None:
    targets = [out, *([tasks_out] if tasks_out else [])]
    if tasks_out is not None and out.resolve() == tasks_out.resolve():
        raise UserError(f"-o and --tasks-out are both {out}; give the tasks their own file")
    for target in targets:
        if path.exists() and target.resolve() == path.resolve():
            raise UserError(f"output {target} is the input file; write to another file")
        if target.is_dir():
            raise UserError(f"output {target} is a folder; name a .jsonl file")
