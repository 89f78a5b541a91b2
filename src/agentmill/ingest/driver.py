"""`ingest`: traces in one format -> a trajectories JSONL (+ a task file), resumable.

Trajectories are streamed from `read_trace_dicts` (canonical dicts: the span formats skip
building the models), redacted, and appended to `out` in whole lines, 256 KiB per write;
ids already in `out` are skipped, so a re-run, a killed run or a run on a grown source adds
only what is new and never rewrites a line (a torn last line is cut off, kept aside in
`<out>.torn`). With `tasks_out`, each trajectory's task (`tasks.task_record`) is appended
there by `qa_hash` as the stream goes.

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

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.ingest.base import IngestOptions, IngestStats, read_trace_dicts
from agentmill.ingest.parallel import Built, auto_workers, built, to_built
from agentmill.ingest.redact import Redactor
from agentmill.ingest.tasks import append_task_lines
from agentmill.store import JsonlWriter, iter_jsonl

# lines are written 256 KiB at a time: a killed ingest redoes what it held (ids not in `out`)
WRITE_BUFFER = 256 * 1024

# The ingest allocates millions of short-lived containers and keeps next to none: a
# collection every 700 allocations (Python's default) cost ~7% of its CPU and found nothing.
GC_EVERY = 50_000

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
    with gc_every(GC_EVERY):
        if n > 1:
            records = built(path, opts, stats, n, redactor, val_fraction)
        else:
            dicts = read_trace_dicts(fmt, path, opts, stats)
            records = (to_built(d, redactor, val_fraction) for d in dicts)
        writer = JsonlWriter(out, WRITE_BUFFER)
        try:
            tasks = _store(records, writer, known_ids(out), stats)
            if tasks_out is None:
                for _ in tasks:
                    pass
            else:
                added = append_task_lines(tasks, tasks_out, WRITE_BUFFER)
                stats.tasks_added, stats.tasks_present = added
        finally:
            writer.close()
    return stats


@contextlib.contextmanager
def gc_every(allocations: int) -> Iterator[None]:
    """Run the young-generation collector every `allocations` net allocations, restoring
    the process's setting afterwards."""
    old = gc.get_threshold()
    gc.set_threshold(allocations, *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _store(
    records: Iterable[Built], writer: JsonlWriter, known: set[str], stats: IngestSummary
) -> Iterator[tuple[str, bytes | memoryview]]:
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
