"""A Studio file ingested by worker processes: conversations rebuilt in parallel, written in
order (`agentmill ingest agentscope-studio FILE --workers N`).

The parent opens the file, checks it, and lists the selected conversations (ids and
provenance, from the conversation index); it hands them out in chunks of `CHUNK`. Each
worker opens the file read-only itself and, for its chunk, reads the spans, rebuilds,
checks and redacts the trajectories and builds their tasks, exactly as the serial ingest
does, and sends back their JSON lines with its counts. The parent writes the chunks in
listing order, so the output files are byte for byte those of a serial ingest; at most
`2 * workers` chunks are in flight, so memory stays flat in the file's size. A worker's
error (a damaged page, `--strict` on a bad span) stops the ingest after the chunks before
it are written, and so does a worker that dies (killed for memory: `BrokenProcessPool`);
the pool is shut down on any exit.

Workers are forked when the parent runs a single thread on Linux and has not imported
torch (the `agentmill ingest` command): they start with the ingesters already imported and
share the parent's pages, which saved about a tenth of the workers' CPU on the benchmark
file. Otherwise (a library caller with threads; torch, whose native thread pools Python
does not see) they are spawned, since a forked child of a multi-threaded process can
deadlock on a lock another thread held; each then pays the import of the ingesters, a few
tenths of a second. Either way the parent's own connection is never used by a worker: each
opens the file itself.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import multiprocessing
import os
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import AgentmillError
from agentmill.ingest import studio
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.redact import Redactor

CHUNK = 32  # conversations per job: large enough that a job's overhead is negligible
AUTO_MIN_BYTES = 64 * 2**20  # `--workers` unset: serial below this file size
AUTO_MAX_WORKERS = 8
RESULT_PIPE_BYTES = 2**20  # Linux's pipe-max-size for unprivileged processes
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


@dataclass
class Built:
    """One trajectory, ready to append: its id, its JSON line, its task's (or None)."""

    id: str
    line: bytes
    task: bytes | None
    qa_hash: str | None


def to_built(record: dict[str, Any], redactor: Redactor | None, val_fraction: float) -> Built:
    """A trajectory's canonical dict (`Trajectory.to_dict()`) redacted (when asked) and
    serialized, with its task (serial and workers)."""
    from agentmill.ingest.tasks import task_record

    if redactor is not None:
        record = redactor.record(record)
    task = task_record(record, val_fraction)
    line = orjson.dumps(record)
    if task is None:
        return Built(record["id"], line, None, None)
    return Built(record["id"], line, orjson.dumps(task), task["metadata"]["qa_hash"])


def start_method() -> str:
    """How workers start: "fork" where it is safe (Linux, this process runs one thread and
    no torch), else "spawn" (see the module docstring)."""
    single = threading.active_count() == 1 and "torch" not in sys.modules
    return "fork" if sys.platform.startswith("linux") and single else "spawn"


def auto_workers(fmt: str, path: Path, workers: int | None) -> int:
    """Worker processes for an ingest: `workers` when given; else one per core (at most 8)
    for a Studio file of 64 MiB or more, else 1 (serial). Only Studio files are split."""
    if fmt != studio.SOURCE:
        return 1
    if workers is not None:
        return workers
    big = path.is_file() and path.stat().st_size >= AUTO_MIN_BYTES
    return min(len(os.sched_getaffinity(0)), AUTO_MAX_WORKERS) if big else 1


def built(
    path: Path,
    opts: IngestOptions,
    stats: IngestStats,
    workers: int,
    redactor: Redactor | None,
    val_fraction: float,
) -> Iterator[Built]:
    """The records in the serial order (`task` None: a trajectory with no task); counts are
    merged into `stats` as chunks arrive. The file is checked before any worker starts."""
    db, layout = studio.open_checked(path)
    return _run(db, layout, path, opts, stats, workers, (redactor, val_fraction))


def _run(
    db: sqlite3.Connection,
    layout: studio.Layout,
    path: Path,
    opts: IngestOptions,
    stats: IngestStats,
    workers: int,
    shape: tuple[Redactor | None, float],
) -> Iterator[Built]:
    ctx = multiprocessing.get_context(start_method())
    pool = ProcessPoolExecutor(workers, ctx, initializer=_init, initargs=(path, opts, *shape))
    _widen_result_pipe(pool)
    pending: deque[Future[tuple[list[Built], IngestStats]]] = deque()
    try:
        chunk: list[tuple[str | None, dict[str, Any]]] = []
        for unit in studio.units(db, layout, path, opts, stats):
            chunk.append(unit)
            if len(chunk) == CHUNK:
                pending.append(pool.submit(_work, chunk))
                chunk = []
                if len(pending) >= 2 * workers:
                    yield from _take(pending.popleft(), stats)
        if chunk:
            pending.append(pool.submit(_work, chunk))
        while pending:
            yield from _take(pending.popleft(), stats)
    except sqlite3.DatabaseError as e:
        raise studio.unreadable(path, e) from None
    except BrokenProcessPool:
        raise AgentmillError(
            f"{path}: an ingest worker process died (out of memory?); the trajectories "
            "written so far are kept: re-run the same command with fewer --workers"
        ) from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        db.close()


def _widen_result_pipe(pool: ProcessPoolExecutor) -> None:
    """Give the pipe that brings the workers' results 1 MiB (Linux's default 64 KiB took
    16 wakeups per chunk of ~1 MB; the wider pipe made the benchmark command ~4% faster).
    Best effort: the queue is the executor's own, so any failure leaves the default."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = pool._result_queue._reader.fileno()  # type: ignore[attr-defined]
        fcntl.fcntl(fd, _F_SETPIPE_SZ, RESULT_PIPE_BYTES)


def _take(job: Future[tuple[list[Built], IngestStats]], stats: IngestStats) -> list[Built]:
    records, counts = job.result()  # a worker's exception is raised here
    stats.merge(counts)
    return records


# --- in the worker -------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init(path: Path, opts: IngestOptions, redactor: Redactor | None, val_fraction: float) -> None:
    from agentmill.ingest.driver import GC_EVERY

    gc.set_threshold(GC_EVERY, *gc.get_threshold()[1:])  # as the serial ingest (driver.py)
    _worker.update(path=path, opts=opts, redactor=redactor, val_fraction=val_fraction)
    try:
        db = studio.connect(path)
        layout = studio.detect_layout(db)
        _worker.update(db=db, layout=layout, fetch=studio.fetcher(db, layout))
    except (sqlite3.DatabaseError, AgentmillError) as e:  # raised by the first job instead
        _worker["error"] = e


def _work(units: list[tuple[str | None, dict[str, Any]]]) -> tuple[list[Built], IngestStats]:
    from agentmill.ingest.rebuild import rebuild_dicts

    w = _worker
    if "error" in w:
        error = w["error"]
        raise error if isinstance(error, AgentmillError) else studio.unreadable(w["path"], error)
    stats, out = IngestStats(), []
    try:
        for conv, origin in units:
            spans_of = studio.unit_spans(
                w["db"], w["fetch"], w["layout"], conv, origin, stats, w["opts"]
            )
            for spans in spans_of:
                for d in rebuild_dicts(spans, stats, w["opts"], studio.SOURCE):
                    out.append(to_built(d, w["redactor"], w["val_fraction"]))
    except sqlite3.DatabaseError as e:
        raise studio.unreadable(w["path"], e) from None
    return out, stats
