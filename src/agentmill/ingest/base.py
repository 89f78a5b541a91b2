"""What every ingester shares: its options, its counters, and the format table."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from agentmill.errors import UserError
from agentmill.records import Trajectory

# CLI name -> module under agentmill.ingest exposing `read(path, opts, stats)`.
FORMATS: dict[str, str] = {
    "agentscope-studio": "studio",
    "otel": "otel",
    "chat-logs": "chatlogs",
    "mini-swe": "miniswe",
}


@dataclass
class IngestOptions:
    """Selection and behaviour options; each ingester uses the ones that apply to it."""

    projects: list[str] = field(default_factory=list)  # Studio run_table.project
    runs: list[str] = field(default_factory=list)  # run / conversation ids
    since: datetime | None = None  # keep turns starting at or after (UTC)
    until: datetime | None = None  # keep turns starting before (UTC)
    logs: Path | None = None  # OTLP logs file joined to spans (event-based GenAI content)
    strict: bool = False  # a bad span/line/file raises UserError instead of being counted


@dataclass
class IngestStats:
    """What an ingest read, built and skipped (by reason), printed as its summary."""

    read: Counter[str] = field(default_factory=Counter)  # e.g. {"spans": 1200, "runs": 4}
    built: int = 0  # trajectories yielded
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> count
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first place it happened

    def skip(self, reason: str, where: str, strict: bool = False) -> None:
        """Count a skip; under `strict` stop with a one-line error naming the place."""
        if strict:
            raise UserError(f"{where}: {reason}; fix the input or drop --strict")
        self.skipped[reason] += 1
        self.examples.setdefault(reason, where)

    def merge(self, other: IngestStats) -> None:
        """Add `other`'s counts (a later part of the same input: its examples come after)."""
        self.read.update(other.read)
        self.built += other.built
        self.skipped.update(other.skipped)
        for reason, where in other.examples.items():
            self.examples.setdefault(reason, where)

    def to_dict(self) -> dict[str, Any]:
        return {
            "read": dict(self.read),
            "built": self.built,
            "skipped": dict(self.skipped),
            "examples": self.examples,
        }


def read_traces(
    fmt: str, path: Path, opts: IngestOptions | None = None, stats: IngestStats | None = None
) -> Iterator[Trajectory]:
    """Trajectories from `path` in format `fmt` (a key of FORMATS)."""
    module = _module(fmt, path)
    return module.read(path, opts or IngestOptions(), stats if stats is not None else IngestStats())


def read_trace_dicts(
    fmt: str, path: Path, opts: IngestOptions | None = None, stats: IngestStats | None = None
) -> Iterator[dict[str, Any]]:
    """`read_traces` as each trajectory's canonical dict (`Trajectory.to_dict()`): the span
    formats (those with `read_spans`) build them without the models (`canonical`), the
    others dump their models."""
    module = _module(fmt, path)
    opts, stats = opts or IngestOptions(), stats if stats is not None else IngestStats()
    if not hasattr(module, "read_spans"):
        return (t.to_dict() for t in module.read(path, opts, stats))
    from agentmill.ingest.rebuild import rebuild_dicts

    groups = module.read_spans(path, opts, stats)
    return (d for spans in groups for d in rebuild_dicts(spans, stats, opts, module.SOURCE))


def _module(fmt: str, path: Path) -> Any:
    if fmt not in FORMATS:
        raise UserError(f"unknown trace format '{fmt}'; use one of: {', '.join(FORMATS)}")
    if not path.exists():
        raise UserError(f"file not found: {path}")
    return importlib.import_module(f"agentmill.ingest.{FORMATS[fmt]}")
