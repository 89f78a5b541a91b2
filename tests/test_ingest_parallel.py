"""A Studio file ingested by worker processes (`--workers N`, ingest/parallel.py) gives the
same files, byte for byte, and the same counts as the serial ingest; a worker's `--strict`
error stops the ingest with the chunks before it written."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from studio_db import RunScript, Step, Turn, build_db, sample_run

from agentmill.errors import AgentmillError, UserError
from agentmill.ingest import parallel
from agentmill.ingest.base import IngestOptions
from agentmill.ingest.driver import ingest
from agentmill.ingest.redact import Redactor
from agentmill.store import iter_jsonl

FORMAT = "agentscope-studio"
DAY = datetime(2025, 11, 20, tzinfo=UTC)


def _db(tmp_path: Path, layout: str, protocol: str, version: str) -> Path:
    """Eleven runs (a run-less one and, for 2.x, a no-session bucket of two traces), one
    span with corrupt attributes, an e-mail address to redact."""
    runs = [
        sample_run(f"run-{i:02d}", start=DAY + timedelta(minutes=i), with_run_row=i != 3)
        for i in range(11)
    ]
    runs[5].turns[1].user = "Mail me at ann@example.com, doubled?"
    if protocol == "as2":
        bucket = [Turn("Hi", [Step("Hello.")]), Turn("Bye", [Step("Bye.")])]
        runs.append(RunScript("[no_session_id]", bucket, with_run_row=False))
    path = build_db(tmp_path / f"{layout}-{version}.sqlite", runs, layout, protocol, version)
    with sqlite3.connect(path) as db:
        (rowid,) = db.execute("SELECT max(rowid) FROM span_table").fetchone()
        db.execute("UPDATE span_table SET attributes = '{\"x\": [' WHERE rowid = ?", (rowid - 7,))
    return path


def _written(path: Path) -> list[bytes]:
    return [line for _, line in iter_jsonl(path)]


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.parametrize(
    ("layout", "protocol", "version"),
    [("old", "old", ""), ("migrated", "old", ""), ("new", "as2", "2.0.8")],
)
def test_workers_write_what_the_serial_ingest_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    layout: str,
    protocol: str,
    version: str,
    start: str,
) -> None:
    monkeypatch.setattr(parallel, "CHUNK", 2)  # many chunks, more than 2 per worker in flight
    monkeypatch.setattr(parallel, "start_method", lambda: start)
    path = _db(tmp_path, layout, protocol, version)
    redactor = Redactor()
    files = {}
    for n in (1, 2):
        out, tasks = tmp_path / f"traj-{n}.jsonl", tmp_path / f"tasks-{n}.jsonl"
        files[n] = ingest(FORMAT, path, out, tasks, redactor=redactor, workers=n).to_dict()
        files[n]["files"] = (out.read_bytes(), tasks.read_bytes())
    serial, split = files[1], files[2]
    assert serial["built"] >= 20 and serial["skipped"] == {"bad_attributes": 1}
    assert (
        b"ann@example.com" not in serial["files"][0] and b"[REDACTED_EMAIL]" in serial["files"][0]
    )
    assert split == serial
    # a re-run with workers adds nothing: the ids and task hashes are already there
    again = ingest(FORMAT, path, tmp_path / "traj-2.jsonl", tmp_path / "tasks-2.jsonl", workers=2)
    assert again.written == 0 and again.already_written == serial["built"]


def test_a_workers_strict_error_keeps_the_chunks_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "CHUNK", 1)
    path = _db(tmp_path, "new", "genai", "1.0.12")
    out = tmp_path / "traj.jsonl"
    serial = tmp_path / "serial.jsonl"
    with pytest.raises(UserError, match=r"span_table row .*bad_attributes; fix the input"):
        ingest(FORMAT, path, out, workers=2, opts=IngestOptions(strict=True))
    with pytest.raises(UserError, match=r"span_table row .*bad_attributes"):
        ingest(FORMAT, path, serial, workers=1, opts=IngestOptions(strict=True))
    assert _written(out) and _written(out) == _written(serial)


def test_how_many_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_db(tmp_path / "db.sqlite", [sample_run()])
    assert parallel.auto_workers(FORMAT, path, None) == 1  # small: serial
    assert parallel.auto_workers(FORMAT, path, 3) == 3
    assert parallel.auto_workers("otel", path, 3) == 1
    monkeypatch.setattr(parallel, "AUTO_MIN_BYTES", 0)
    cores = len(os.sched_getaffinity(0))
    assert parallel.auto_workers(FORMAT, path, None) == min(cores, 8)


def test_workers_option_is_checked(cli, tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]\n')
    rc, _, err = cli("ingest", "chat-logs", log, "-o", tmp_path / "o.jsonl", "--workers", "2")
    assert rc == 2 and "--workers applies to agentscope-studio only" in err
    db = build_db(tmp_path / "db.sqlite", [sample_run()])
    rc, _, err = cli("ingest", FORMAT, db, "-o", tmp_path / "o.jsonl", "--workers", "0")
    assert rc == 2 and "--workers" in err
    rc, out, err = cli("ingest", FORMAT, db, "-o", tmp_path / "o.jsonl", "--workers", "2")
    assert rc == 0 and "built 2 trajectories: 2 new" in out, err


class DyingRedactor(Redactor):
    """Kills the worker process that redacts run-07's first turn (as the OOM killer would)."""

    def record(self, data):  # noqa: ANN001, ANN201
        if data["provenance"]["source_id"] == "run-07":
            os._exit(3)
        return super().record(data)


def test_a_worker_that_dies_stops_the_ingest_with_what_came_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "CHUNK", 1)
    path = _db(tmp_path, "new", "genai", "1.0.12")
    out = tmp_path / "traj.jsonl"
    with pytest.raises(AgentmillError, match="an ingest worker process died"):
        ingest(FORMAT, path, out, redactor=DyingRedactor(), workers=2)
    serial = tmp_path / "serial.jsonl"
    ingest(FORMAT, path, serial, redactor=Redactor(), workers=1)
    written, whole = _written(out), _written(serial)
    assert 0 < len(written) < len(whole) and written == whole[: len(written)]


def test_the_collector_setting_is_restored_after_an_ingest(tmp_path: Path) -> None:
    import gc

    from agentmill.ingest.driver import GC_EVERY, gc_every

    before = gc.get_threshold()
    with pytest.raises(RuntimeError), gc_every(GC_EVERY):
        assert gc.get_threshold()[0] == GC_EVERY
        raise RuntimeError
    assert gc.get_threshold() == before
    ingest(FORMAT, build_db(tmp_path / "db.sqlite", [sample_run()]), tmp_path / "o.jsonl")
    assert gc.get_threshold() == before


def test_workers_are_forked_only_where_it_is_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import threading

    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert parallel.start_method() == ("fork" if threading.active_count() == 1 else "spawn")
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert parallel.start_method() == "spawn"  # a forked child could deadlock
    finally:
        stop.set()
        other.join()
    monkeypatch.setitem(sys.modules, "torch", object())  # native thread pools Python can't see
    assert parallel.start_method() == "spawn"


def test_the_results_pipe_is_widened() -> None:
    import fcntl
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn")) as pool:
        fd = pool._result_queue._reader.fileno()  # the executor's own pipe
        before = fcntl.fcntl(fd, 1032)  # F_GETPIPE_SZ
        parallel._widen_result_pipe(pool)
        assert before < parallel.RESULT_PIPE_BYTES == fcntl.fcntl(fd, 1032)


def test_lines_come_back_through_shared_memory_or_the_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forked workers leave each chunk's lines in its shared-memory slot; a chunk that does
    not fit its slot sends them through the pipe. Either way the files are the serial ones."""
    monkeypatch.setattr(parallel, "CHUNK", 2)
    monkeypatch.setattr(parallel, "start_method", lambda: "fork")
    path = _db(tmp_path, "new", "genai", "1.0.12")
    serial = tmp_path / "serial.jsonl", tmp_path / "serial-tasks.jsonl"
    conversations = ingest(FORMAT, path, *serial, workers=1).read["conversations"]
    average = sum(p.stat().st_size for p in serial) // -(-conversations // 2)  # per chunk
    ways: list[bool] = []
    take = parallel._take

    def watched(job, slot, slots, stats):  # noqa: ANN001, ANN202
        ways.append(job.result()[2] is None)
        return take(job, slot, slots, stats)

    monkeypatch.setattr(parallel, "_take", watched)
    default = parallel.SLOT_BYTES
    for slot_bytes in (default, average, 1):
        monkeypatch.setattr(parallel, "SLOT_BYTES", slot_bytes)
        ways.clear()
        out = tmp_path / f"traj-{slot_bytes}.jsonl", tmp_path / f"tasks-{slot_bytes}.jsonl"
        ingest(FORMAT, path, *out, workers=2)
        assert [p.read_bytes() for p in out] == [p.read_bytes() for p in serial]
        expect = {default: {True}, 1: {False}}.get(slot_bytes, {True, False})
        assert set(ways) == expect, slot_bytes


def test_workers_keep_their_freed_heap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker sets glibc's trim threshold (its heap shrank and regrew every chunk);
    the caller's process never does."""
    import platform
    import subprocess
    import sys

    code = "from agentmill.ingest.parallel import _keep_heap; print(_keep_heap())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(platform.libc_ver()[0] == "glibc")
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(parallel, "start_method", lambda: "fork")  # forked: sees the patch
    monkeypatch.setattr(parallel, "_keep_heap", lambda: (marks / str(os.getpid())).touch())
    db = build_db(tmp_path / "db.sqlite", [sample_run(f"run-{i}") for i in range(4)])
    ingest(FORMAT, db, tmp_path / "o.jsonl", workers=2)
    assert len(list(marks.iterdir())) == 2 and not (marks / str(os.getpid())).exists()
