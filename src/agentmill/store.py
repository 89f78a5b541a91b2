"""The run folder: append-only stage outputs, failures, call log, manifest, resume.

Layout of a run folder::

    config.yaml            the resolved config (names of key variables only, never keys)
    manifest.json          run id, fingerprint, versions, per-stage counts and timings
    failures.jsonl         one line per failed item: stage, key, reason, error
    calls.jsonl            one line per model call: time, backend, latency, retries, tokens,
                           cache hit
    <stage>/records.jsonl  the stage's output records, one JSON line each, appended as made
    <stage>/stats.json     the stage's counts (done, failed by reason, tokens, seconds)

Crash safety: each record is written with ONE `write()` on an unbuffered append-mode file,
so a SIGKILL leaves every finished record on disk (the page cache survives the process).
The only damage a kill can do is a torn last line; `repair_torn_tail` cuts it off at open
(keeping the torn bytes aside in `<file>.torn`) before anything is appended. Resume reads
the keys of the records already written and skips that work.
"""

from __future__ import annotations

import contextlib
import os
import platform
import secrets
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson
from filelock import FileLock, Timeout

from agentmill import __version__
from agentmill.errors import UserError

MANIFEST = "manifest.json"
FAILURES = "failures.jsonl"
CALLS = "calls.jsonl"
CONFIG = "config.yaml"
_TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "aiohttp",
    "pydantic",
    "orjson",
    "datasets",
    "pyarrow",
)


def repair_torn_tail(path: Path) -> int:
    """Cut an incomplete last line (no trailing newline) off `path`; return bytes removed."""
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb+") as f:
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        # Walk back to the last newline in chunks: the torn line may be long.
        pos, chunk = size, 65536
        cut = 0
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            buf = f.read(pos - start)
            i = buf.rfind(b"\n")
            if i >= 0:
                cut = start + i + 1
                break
            pos = start
        f.seek(cut)
        torn = f.read()
        with path.with_name(path.name + ".torn").open("ab") as aside:
            aside.write(torn + b"\n")
        f.truncate(cut)
    return size - cut


def iter_jsonl(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for each complete non-empty line; a torn last line is skipped."""
    if not path.exists():
        return
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.endswith(b"\n"):
                return  # torn tail: never a record
            if line.strip():
                yield n, line


class JsonlWriter:
    """Append-only JSONL file; each `append` is one unbuffered `write()` of one full line.

    With `buffer` (bytes), lines gather in memory and go out in one `write()` once that much
    is held, and at `flush`/`close`: for writers of many small lines whose caller can redo
    what a kill loses (`agentmill ingest`). Only whole lines are ever written, so a kill
    leaves at worst a torn last line, which the next writer cuts off."""

    def __init__(self, path: Path, buffer: int = 0):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.repaired = repair_torn_tail(path)
        self._f = path.open("ab", buffering=0)
        self._limit = buffer
        self._held: list[bytes | memoryview] = []
        self._size = 0

    def append(self, data: bytes | memoryview) -> None:
        if not self._limit:
            self._f.write(bytes(data) + b"\n")
            return
        self._held.append(data)
        self._size += len(data) + 1
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        if self._held:
            self._held.append(b"")
            data = memoryview(b"\n".join(self._held))
            self._held, self._size = [], 0
            while data:  # a raw write may take less than it was given
                data = data[self._f.write(data) :]

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if not self._f.closed:
            try:
                self.flush()
            finally:
                self.sync()
                self._f.close()


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers see the old or the new file, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@dataclass
class FailureLog:
    """failures.jsonl: one line per (stage, key, reason); a repeated failure is not re-added."""

    path: Path
    _seen: set[tuple[str, str, str]] = field(default_factory=set)
    _writer: JsonlWriter | None = None

    def __post_init__(self) -> None:
        for _, line in iter_jsonl(self.path):
            d = orjson.loads(line)
            self._seen.add((d["stage"], d["key"], d["reason"]))

    def add(self, stage: str, key: str, reason: str, error: str, **extra: Any) -> None:
        ident = (stage, key, reason)
        if ident in self._seen:
            return
        self._seen.add(ident)
        if self._writer is None:
            self._writer = JsonlWriter(self.path)
        line = {"time": time.time(), "stage": stage, "key": key, "reason": reason, "error": error}
        self._writer.append(orjson.dumps(line | extra))

    def close(self) -> None:
        if self._writer:
            self._writer.close()


def read_failures(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for _, line in iter_jsonl(path)]


class Stage:
    """One stage's folder: its records file, the keys already done, its stats."""

    def __init__(self, root: Path, name: str):
        self.name = name
        self.dir = root / name
        self.records_path = self.dir / "records.jsonl"
        self.stats_path = self.dir / "stats.json"
        self._writer: JsonlWriter | None = None

    def writer(self) -> JsonlWriter:
        if self._writer is None:
            self._writer = JsonlWriter(self.records_path)
        return self._writer

    def iter_records(self) -> Iterator[dict[str, Any]]:
        for _, line in iter_jsonl(self.records_path):
            yield orjson.loads(line)

    def done_keys(self, key: str = "id") -> set[str]:
        """Keys of the records already written (`key` names a field, or 'task_id#sample_index')."""
        if key == "task_id#sample_index":
            return {f"{r['task_id']}#{r.get('sample_index', 0)}" for r in self.iter_records()}
        return {r[key] for r in self.iter_records()}

    def write_stats(self, stats: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.stats_path, orjson.dumps(stats, option=orjson.OPT_INDENT_2))

    def read_stats(self) -> dict[str, Any]:
        return orjson.loads(self.stats_path.read_bytes()) if self.stats_path.exists() else {}

    def close(self) -> None:
        if self._writer:
            self._writer.close()
            self._writer = None


def package_versions() -> dict[str, str]:
    out = {
        "agentmill": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


class RunStore:
    """A run folder, locked against a second process for as long as it is open."""

    def __init__(self, root: Path):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(root / ".lock"))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise UserError(
                f"run folder {root} is in use by another agentmill process; wait for it to end "
                "or pass --out to write elsewhere"
            ) from None
        self.manifest: dict[str, Any] = self.read_manifest(root)
        self.failures = FailureLog(root / FAILURES)
        self.calls = JsonlWriter(root / CALLS)
        self._stages: dict[str, Stage] = {}

    @staticmethod
    def read_manifest(root: Path) -> dict[str, Any]:
        path = root / MANIFEST
        if not path.exists():
            return {}
        try:
            return orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            raise UserError(
                f"{path} is corrupt; restore it or start a new run with --new"
            ) from None

    def stage(self, name: str) -> Stage:
        if name not in self._stages:
            self._stages[name] = Stage(self.root, name)
        return self._stages[name]

    def save_manifest(self) -> None:
        self.manifest["updated_at"] = time.time()
        write_atomic(self.root / MANIFEST, orjson.dumps(self.manifest, option=orjson.OPT_INDENT_2))

    def record_stage(self, name: str, **info: Any) -> None:
        self.manifest.setdefault("stages", {}).setdefault(name, {}).update(info)
        self.save_manifest()

    def close(self) -> None:
        for s in self._stages.values():
            s.close()
        self.failures.close()
        self.calls.close()
        self._lock.release()


def failure_counts(failures: list[dict[str, Any]], done: set[str], stage: str) -> Counter[str]:
    """Failures of `stage` whose key has not succeeded since, counted by reason (latest wins)."""
    latest: dict[str, str] = {}
    for f in failures:
        if f["stage"] == stage:
            latest[f["key"]] = f["reason"]
    return Counter(r for k, r in latest.items() if k not in done)
