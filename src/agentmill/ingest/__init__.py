"""Ingesters: real agent traces -> `Trajectory` records (the feedback half of the flywheel).

One module per format; each exposes

    read(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[Trajectory]

streaming (memory flat in the file's size), counting what it skipped by reason in `stats`.
Span-based formats (AgentScope Studio SQLite, OTLP JSON) first normalize rows/spans into
`spans.Span`, and ONE rebuild (`rebuild.py`) turns spans into trajectories for both.
"""

from __future__ import annotations

from agentmill.ingest.base import FORMATS, IngestOptions, IngestStats, read_traces

__all__ = ["FORMATS", "IngestOptions", "IngestStats", "read_traces"]
