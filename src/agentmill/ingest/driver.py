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
from agentmill.ingest.parallel import Built, auto_workers, built, to_built
from agentmill.ingest.redact import Redactor
from agentmill.ingest.tasks import append_task_lines
from agentmill.store import JsonlWriter, iter_jsonl

# option -> the formats it applies to (the CLI refuses it for the others)
OPTION_FORMATS: dict[str, tuple[str, ...]] = {
    "--project": ("agentscope-studio",),
    "--run": ("agentscope-studio", "otel"),
    "--since": ("agentscope-studio", "otel"),
    "--until": ("agentscope-studio", "otel"),
    "--logs": ("otel",),
    "--workers": ("agentscope-studio",),
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
    workers: int | None = None,
) -> IngestSummary:
    """Read `path` as `fmt`, append new trajectories to `out` and new tasks to `tasks_out`.
    `workers`: processes that rebuild a Studio file's conversations (`ingest.parallel`;
    None: one per core for a big file); the output is the same for any number."""
    _check_paths(path, out, tasks_out)
    if not 0.0 <= val_fraction <= 1.0:
        raise UserError(f"val_fraction {val_fraction} is out of range; use a number from 0 to 1")
    if workers is not None and workers < 1:
        raise UserError(f"workers {workers}: give 1 or more processes")
    opts = opts or IngestOptions()
    stats = IngestSummary()
    n = auto_workers(fmt, path, workers)
    if n > 1:
        records = built(path, opts, stats, n, redactor, val_fraction)
    else:
        trajs = read_traces(fmt, path, opts, stats)
        records = (to_built(t, redactor, val_fraction) for t in trajs)
    writer = JsonlWriter(out)
    try:
        tasks = _store(records, writer, known_ids(out), stats)
        if tasks_out is None:
            for _ in tasks:
                pass
        else:
            stats.tasks_added, stats.tasks_present = append_task_lines(tasks, tasks_out)
    finally:
        writer.close()
    return stats


def _store(
    records: Iterable[Built], writer: JsonlWriter, known: set[str], stats: IngestSummary
) -> Iterator[tuple[str, bytes]]:
    """Append each trajectory not in `known`; yield every task as (qa_hash, JSON line)."""
    for rec in records:
        if rec.id in known:
            stats.already_written += 1
        else:
            writer.append(rec.line)
            known.add(rec.id)
            stats.written += 1
        if rec.task is None or rec.qa_hash is None:
            stats.without_task += 1
        else:
            yield rec.qa_hash, rec.task


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
