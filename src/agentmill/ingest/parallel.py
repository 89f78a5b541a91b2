"""A Studio file ingested by worker processes: conversations rebuilt in parallel, written in
order (`agentmill ingest agentscope-studio FILE --workers N`).

The parent opens the file, checks it, and lists the selected conversations (ids and
provenance, from the conversation index); it hands them out in chunks of `CHUNK`. Each
worker opens the file read-only itself and, for its chunk, reads the spans, rebuilds,
checks and redacts the trajectories and builds their tasks, exactly as the serial ingest
does, and gives back their JSON lines with its counts: forked workers copy the lines into
the chunk's slot of shared memory and send only their lengths (`_Slots`), spawned ones
send them through the pipe. The parent writes the chunks in listing order, so the output
files are byte for byte those of a serial ingest; at most `2 * workers` chunks are in
flight, so memory stays flat in the file's size. A worker's
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
opens the file itself, and each keeps the heap it frees (`_keep_heap`).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import mmap
import multiprocessing
import os
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from agentmill.errors import AgentmillError
from agentmill.ingest import studio
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.redact import Redactor

CHUNK = 32  # conversations per job: large enough that a job's overhead is negligible
AUTO_MIN_BYTES = 64 * 2**20  # `--workers` unset: serial below this file size
AUTO_MAX_WORKERS = 8
RESULT_PIPE_BYTES = 2**20  # Linux's pipe-max-size for unprivileged processes
SLOT_BYTES = 8 * 2**20  # shared memory per chunk in flight (a chunk's lines: ~1 MB typical)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# glibc's mallopt parameters, and the values a worker's heap keeps (see `_keep_heap`)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEEP_HEAP_BYTES, MMAP_FROM_BYTES = 64 * 2**20, 32 * 2**20


class Built(NamedTuple):
    """One trajectory, ready to append: its id, its JSON line, its task's (or None); the
    lines are views of a chunk's bytes when they came back from a worker. A tuple: cheaper
    to make and to pickle than a dataclass."""

    id: str
    line: bytes | memoryview
    task: bytes | memoryview | None
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
    method = start_method()
    slots = _Slots.make(2 * workers, SLOT_BYTES) if method == "fork" else None
    ctx = multiprocessing.get_context(method)
    init = (path, opts, *shape, slots)
    pool = ProcessPoolExecutor(workers, ctx, initializer=_init, initargs=init)
    _widen_result_pipe(pool)
    pending: deque[tuple[Future[_Result], int | None]] = deque()

    def submit(chunk: list[tuple[str | None, dict[str, Any]]]) -> None:
        slot = slots.take() if slots else None
        pending.append((pool.submit(_work, chunk, slot), slot))

    try:
        chunk: list[tuple[str | None, dict[str, Any]]] = []
        for unit in studio.units(db, layout, path, opts, stats):
            chunk.append(unit)
            if len(chunk) == CHUNK:
                submit(chunk)
                chunk = []
                if len(pending) >= 2 * workers:
                    yield from _take(*pending.popleft(), slots, stats)
        if chunk:
            submit(chunk)
        while pending:
            yield from _take(*pending.popleft(), slots, stats)
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
        if slots is not None:
            slots.close()


# (id, line length, task line length or -1, qa_hash) per trajectory
_Meta = list[tuple[str, int, int, str | None]]
# a chunk's result: the records' metadata, the counts, and the lines (trajectories joined,
# tasks joined) unless they were left in the chunk's shared-memory slot
_Result = tuple[_Meta, IngestStats, tuple[bytes, bytes] | None]


class _Slots:
    """Shared memory that brings the workers' lines back when workers are forked: one slot
    of `size` bytes per chunk in flight, in one anonymous shared mapping that the forked
    workers inherit. A worker copies its chunk's lines into the chunk's slot and sends only
    their lengths; the parent copies them out before the slot is handed to another chunk.
    Bringing ~1 MB of lines per chunk through the results pipe cost the benchmark command
    about 1 s of its 6.5 s of CPU (pickling, two pipe copies, the parent's unpickling
    thread). A chunk whose lines do not fit sends them through the pipe instead."""

    def __init__(self, count: int, size: int):
        self.size = size
        self.mem = mmap.mmap(-1, count * size)  # MAP_SHARED | MAP_ANONYMOUS
        self.free = list(range(count))

    @classmethod
    def make(cls, count: int, size: int) -> _Slots | None:
        """Slots, or None (lines through the pipe) where the mapping cannot be made."""
        try:
            return cls(count, size)
        except (OSError, ValueError):
            return None

    def take(self) -> int:
        return self.free.pop()

    def read(self, slot: int, n: int) -> bytes:
        start = slot * self.size
        return self.mem[start : start + n]

    def close(self) -> None:
        self.mem.close()


def _widen_result_pipe(pool: ProcessPoolExecutor) -> None:
    """Give the pipe that brings the workers' results 1 MiB (Linux's default 64 KiB took
    16 wakeups per chunk of ~1 MB; the wider pipe made the benchmark command ~4% faster).
    Best effort: the queue is the executor's own, so any failure leaves the default."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        fd = pool._result_queue._reader.fileno()  # type: ignore[attr-defined]
        fcntl.fcntl(fd, _F_SETPIPE_SZ, RESULT_PIPE_BYTES)


def _take(
    job: Future[_Result], slot: int | None, slots: _Slots | None, stats: IngestStats
) -> list[Built]:
    """A chunk's records, their lines copied out of its slot (which is then free again)."""
    meta, counts, blobs = job.result()  # a worker's exception is raised here
    stats.merge(counts)
    if blobs is None:
        assert slots is not None and slot is not None
        size = sum(n for _, n, _, _ in meta)
        data = memoryview(slots.read(slot, size + sum(max(m, 0) for _, _, m, _ in meta)))
        lines, tasks = data, data[size:]
    else:
        lines, tasks = memoryview(blobs[0]), memoryview(blobs[1])
    if slots is not None and slot is not None:
        slots.free.append(slot)
    out, at, task_at = [], 0, 0
    for id_, n, m, qa in meta:
        line, at = lines[at : at + n], at + n
        if m < 0:
            out.append(Built(id_, line, None, None))
        else:
            out.append(Built(id_, line, tasks[task_at : task_at + m], qa))
            task_at += m
    return out


# --- in the worker -------------------------------------------------------------------------

_worker: dict[str, Any] = {}


def _init(
    path: Path,
    opts: IngestOptions,
    redactor: Redactor | None,
    val_fraction: float,
    slots: _Slots | None,
) -> None:
    from agentmill.ingest.driver import GC_EVERY

    gc.set_threshold(GC_EVERY, *gc.get_threshold()[1:])  # as the serial ingest (driver.py)
    _keep_heap()
    _worker.update(path=path, opts=opts, redactor=redactor, val_fraction=val_fraction)
    _worker.update(slots=slots)
    try:
        db = studio.connect(path)
        layout = studio.detect_layout(db)
        _worker.update(db=db, fetch=studio.Fetcher(db, layout))
    except (sqlite3.DatabaseError, AgentmillError) as e:  # raised by the first job instead
        _worker["error"] = e


def _keep_heap() -> bool:
    """Have glibc keep a worker's freed heap instead of handing it back to the kernel.

    By default glibc shrinks the heap whenever 128 KiB are free at its top, and a worker
    frees a whole chunk's objects at once, so its heap shrank and grew back on every chunk:
    25,000-57,000 page faults on the 200k-span benchmark file; with a 64 MiB trim threshold
    ~11,000, and 2-3% less worker CPU. Fixing the trim threshold also fixes
    the mmap threshold (glibc stops adapting it), so that is set to glibc's own adaptive
    maximum, 32 MiB. Workers are this module's own processes; the caller's process is
    never changed. Best effort: False where the C library has no `mallopt` (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_FROM_BYTES) and mallopt(_M_TRIM_THRESHOLD, KEEP_HEAP_BYTES)
    )


def _work(units: list[tuple[str | None, dict[str, Any]]], slot: int | None) -> _Result:
    from agentmill.ingest.rebuild import rebuild_dicts

    w = _worker
    if "error" in w:
        error = w["error"]
        raise error if isinstance(error, AgentmillError) else studio.unreadable(w["path"], error)
    stats, out = IngestStats(), []
    try:
        for spans in studio.conversation_spans(w["db"], w["fetch"], units, stats, w["opts"]):
            for d in rebuild_dicts(spans, stats, w["opts"], studio.SOURCE):
                out.append(to_built(d, w["redactor"], w["val_fraction"]))
    except sqlite3.DatabaseError as e:
        raise studio.unreadable(w["path"], e) from None
    meta, blobs = _pack(out, w["slots"], slot)
    return meta, stats, blobs


def _pack(
    out: list[Built], slots: _Slots | None, slot: int | None
) -> tuple[_Meta, tuple[bytes, bytes] | None]:
    """The chunk's metadata, and its lines: copied into its slot (None returned) when they
    fit, else joined to go through the pipe."""
    meta = [(b.id, len(b.line), -1 if b.task is None else len(b.task), b.qa_hash) for b in out]
    size = sum(n + max(m, 0) for _, n, m, _ in meta)
    if slots is None or slot is None or size > slots.size:
        lines = b"".join(b.line for b in out)
        return meta, (lines, b"".join(b.task for b in out if b.task is not None))
    at = slot * slots.size
    with memoryview(slots.mem) as view:
        for b in out:
            view[at : at + len(b.line)] = b.line
            at += len(b.line)
        for b in out:
            if b.task is not None:
                view[at : at + len(b.task)] = b.task
                at += len(b.task)
    return meta, None
