"""Where a run stands (`agentmill status`) and quick figures of a records file (`agentmill stats`).

Both read only the files: they work on a run that is still going, or that was killed.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentmill.curation.stage import curation_status
from agentmill.errors import UserError
from agentmill.store import (
    CALLS,
    CONFIG,
    FAILURES,
    MANIFEST,
    RunStore,
    Stage,
    failure_counts,
    iter_jsonl,
    read_failures,
)


def resolve_records(path: Path) -> Path:
    """A records file, or a run folder (meaning its rollout records)."""
    if path.is_dir():
        for stage in ("rollout", "source"):
            p = path / stage / "records.jsonl"
            if p.exists():
                return p
        raise UserError(
            f"{path} has no records yet; pass a .jsonl file or a run folder that has run"
        )
    if not path.exists():
        raise UserError(f"file not found: {path}")
    return path


def load_records(path: Path) -> list[dict[str, Any]]:
    """All records of a JSONL file; a line that is not a JSON object is a one-line error."""
    out = []
    for n, line in iter_jsonl(resolve_records(path)):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UserError(
                f"{path}:{n} is not valid JSON; pass a JSONL file of agentmill records"
            ) from None
        if not isinstance(rec, dict):
            raise UserError(
                f"{path}:{n} is not a JSON object; pass a JSONL file of agentmill records"
            )
        out.append(rec)
    return out


def run_status(run_dir: Path) -> dict[str, Any]:
    """Done / pending / failed-by-reason for each stage of a run folder."""
    if not (run_dir / MANIFEST).exists():
        raise UserError(
            f"{run_dir} is not a run folder (no {MANIFEST}); pass the folder `agentmill run` wrote"
        )
    manifest = RunStore.read_manifest(run_dir)
    cfg = yaml.safe_load((run_dir / CONFIG).read_text()) if (run_dir / CONFIG).exists() else {}
    n = int((cfg.get("rollout") or {}).get("n", 1))
    failures = read_failures(run_dir / FAILURES)
    tasks = Stage(run_dir, "source").done_keys("id")
    done = Stage(run_dir, "rollout").done_keys("task_id#sample_index")
    failed = failure_counts(failures, done, "rollout")
    bad = Counter(f["reason"] for f in failures if f["stage"] == "source")
    expected = len(tasks) * n
    calls = [orjson.loads(line) for _, line in iter_jsonl(run_dir / CALLS)]
    return {
        "run_dir": str(run_dir),
        "run_id": manifest.get("run_id"),
        "name": manifest.get("name"),
        "tasks": len(tasks),
        "bad_records": dict(bad),
        "n": n,
        "expected": expected,
        "done": len(done),
        "failed": dict(failed),
        "pending": max(0, expected - len(done) - sum(failed.values())),
        "sessions": len(manifest.get("sessions", [])),
        "funnel": manifest.get("stages", {}).get("funnel"),
        "curation": curation_status(run_dir),
        "calls": {
            "total": len(calls),
            "cache_hits": sum(c["cache_hit"] for c in calls),
            "errors": dict(Counter(c["status"] for c in calls if c["status"] != "ok")),
            "retries": sum(c["retries"] for c in calls),
        },
    }


def _dist(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    return {
        "mean": round(statistics.fmean(values), 3),
        "p50": values[len(values) // 2],
        "p95": values[min(len(values) - 1, int(len(values) * 0.95))],
        "max": values[-1],
    }


def file_stats(path: Path) -> dict[str, Any]:
    """Counts and distributions of a file of trajectories or tasks."""
    recs = load_records(path)
    trajs = [r for r in recs if "messages" in r and "task_id" in r]
    out: dict[str, Any] = {"file": str(resolve_records(path)), "records": len(recs)}
    if not trajs:
        out["tasks"] = sum(1 for r in recs if "prompt" in r)
        out["with_ground_truth"] = sum(1 for r in recs if r.get("ground_truth") is not None)
        out["with_tools"] = sum(1 for r in recs if r.get("tools"))
        return out
    usage = [r.get("usage", {}) for r in trajs]
    rewards: dict[str, list[float]] = {}
    for r in trajs:
        for k, v in r.get("rewards", {}).items():
            rewards.setdefault(k, []).append(v)
    out |= {
        "trajectories": len(trajs),
        "tasks": len({r["task_id"] for r in trajs}),
        "status": dict(Counter(r.get("status", "ok") for r in trajs)),
        "stop_reason": dict(Counter(r.get("stop_reason", "stop") for r in trajs)),
        "models": dict(Counter(r.get("model") or "?" for r in trajs)),
        "prompt_tokens": _dist([u.get("prompt_tokens", 0) for u in usage]),
        "completion_tokens": _dist([u.get("completion_tokens", 0) for u in usage]),
        "latency_s": _dist([r.get("latency_s", 0.0) for r in trajs]),
        "rewards": {k: _dist(v) for k, v in rewards.items()},
    }
    return out


def funnel_rows(f: dict[str, Any]) -> list[tuple[str, int]]:
    """The funnel as (label, records) rows, top to bottom: what `agentmill run` prints and the
    report draws. `f` is the manifest's funnel (`Funnel` as a dict).

    >>> funnel_rows({"tasks": 2, "trajectories": 8, "with_tool_call": 6, "well_formed_call": 5,
    ...              "scored": 8, "correct": 3, "kept": 3, "filtered": True,
    ...              "exported": {"export/sft.jsonl": 3}})[-3:]
    [('correct (all rewards = 1)', 3), ('kept', 3), ('exported sft.jsonl', 3)]
    """
    rows = [
        ("tasks", f.get("tasks", 0)),
        ("trajectories", f.get("trajectories", 0)),
        ("with a tool call", f.get("with_tool_call", 0)),
        ("with a well-formed call", f.get("well_formed_call", 0)),
    ]
    if f.get("scored"):
        rows.append(("correct (all rewards = 1)", f.get("correct", 0)))
    if f.get("carried"):
        rows.append(("carried from earlier runs", f["carried"]))
    if f.get("filtered", bool(f.get("dropped"))):  # manifests before `filtered` was stored
        rows.append(("kept", f.get("kept", 0)))
    judged = f.get("judged") or {}
    if judged:
        rows.append(("judged GOOD", judged.get("GOOD", 0)))
    rows += [(f"after {name}", st.get("kept", 0)) for name, st in (f.get("curation") or {}).items()]
    rows += [
        (f"exported {path.rsplit('/', 1)[-1]}", n) for path, n in (f.get("exported") or {}).items()
    ]
    return rows
