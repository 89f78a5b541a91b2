"""A run over time, from the run folder's files alone: trajectories per minute, model calls,
retries, cache hits and failures by reason.

Reads `calls.jsonl` (one line per model call), `rollout/records.jsonl` (each trajectory's
`created_at`) and `failures.jsonl`; works on a run that is still going or was killed.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agentmill.store import CALLS, FAILURES, iter_jsonl

Row = dict[str, Any]
MAX_GAP_FILL = 720
FIELDS = ("trajectories", "calls", "retries", "cache_hits", "failures")


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    for _, line in iter_jsonl(path):
        rec = orjson.loads(line)
        if isinstance(rec, dict):
            yield rec


CREATED = re.compile(rb'"created_at":\s*(-?[0-9][0-9.eE+-]*)')


def _created_at(line: bytes) -> float | None:
    """A trajectory's `created_at` without parsing the whole record (they run to megabytes);
    a line written some other way falls back to a full parse."""
    found = CREATED.findall(line)
    if len(found) == 1:  # the top-level key (orjson writes no spaces); else parse to be sure
        return float(found[0])
    value = orjson.loads(line).get("created_at")
    return float(value) if isinstance(value, int | float) else None


def _minute(t: float) -> int:
    return int(t // 60)


def timeline(run_dir: Path) -> dict[str, Any]:
    """{"per_minute": [...], "failures_by_reason", "calls", "retries", "cache_hits", "wall_s"}.

    Minutes with nothing in them between the first and the last event are kept as zero rows,
    so a stall shows as a gap in the chart rather than disappearing. Streams every file:
    memory holds one counter per minute.
    """
    buckets: dict[int, Counter[str]] = {}
    totals: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    first, last = math.inf, -math.inf

    def add(t: Any, field: str, n: int = 1) -> None:
        nonlocal first, last
        if isinstance(t, int | float):
            buckets.setdefault(_minute(t), Counter())[field] += n
            first, last = min(first, t), max(last, t)

    for c in _lines(run_dir / CALLS):
        retries = int(c.get("retries") or 0)
        hit = int(bool(c.get("cache_hit")))
        totals.update(calls=1, retries=retries, cache_hits=hit)
        add(c.get("time"), "calls")
        add(c.get("time"), "retries", retries)
        add(c.get("time"), "cache_hits", hit)
    for _, line in iter_jsonl(run_dir / "rollout" / "records.jsonl"):
        add(_created_at(line), "trajectories")
    for f in _lines(run_dir / FAILURES):
        reasons[f.get("reason", "?")] += 1
        add(f.get("time"), "failures")
    return {
        "per_minute": _rows(buckets),
        "failures_by_reason": dict(reasons.most_common()),
        "calls": totals["calls"],
        "retries": totals["retries"],
        "cache_hits": totals["cache_hits"],
        "wall_s": round(last - first, 3) if buckets else 0.0,
    }


def _rows(buckets: dict[int, Counter[str]]) -> list[Row]:
    if not buckets:
        return []
    first, last = min(buckets), max(buckets)
    # a run resumed days later would otherwise fill the chart with thousands of empty minutes
    span = range(first, last + 1) if last - first <= MAX_GAP_FILL else sorted(buckets)
    rows = []
    for m in span:
        counts = buckets.get(m, Counter())
        iso = datetime.fromtimestamp(m * 60, UTC).strftime("%Y-%m-%dT%H:%MZ")
        rows.append({"minute": iso} | {f: counts[f] for f in FIELDS})
    return rows
