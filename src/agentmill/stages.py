"""The stages after the rollout: score -> filter -> export, and the funnel they make.

Each has its own fingerprint in the manifest, so changing a reward re-scores without
re-sampling: a stage whose config changed is moved aside (`<stage>.<old fingerprint>/`,
never deleted) and rebuilt, with every stage after it. `score` is incremental (it may run
sandboxes); `filter` and `export` are pure functions of their input and are rewritten whole,
atomically, on every run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agentmill.config import RunConfig
from agentmill.curation.filters import drop_reason
from agentmill.export import export_records
from agentmill.records import Task, Trajectory, content_hash
from agentmill.scoring.stage import run_score_stage
from agentmill.store import RunStore, Stage, write_atomic

ROLLOUT, SCORE, FILTER, EXPORT = "rollout", "score", "filter", "export"


@dataclass
class Funnel:
    """How many records survive each step; printed at the end of a run."""

    tasks: int = 0
    trajectories: int = 0
    with_tool_call: int = 0
    well_formed_call: int = 0
    correct: int = 0
    scored: int = 0
    kept: int = 0
    filtered: bool = False
    dropped: Counter[str] = field(default_factory=Counter)
    exported: dict[str, int] = field(default_factory=dict)
    export_skipped: Counter[str] = field(default_factory=Counter)
    score_failed: Counter[str] = field(default_factory=Counter)


def iter_trajectories(stage: Stage) -> Iterator[Trajectory]:
    for rec in stage.iter_records():
        yield Trajectory.model_validate(rec)


def _reset_if_changed(store: RunStore, name: str, cfg: Any, upstream: str) -> str:
    """Move the stage's folder aside when its config (or an upstream one) changed."""
    fp = content_hash([upstream, cfg.model_dump(mode="json") if cfg is not None else None])
    fps = store.manifest.setdefault("stage_fingerprints", {})
    old = fps.get(name)
    folder = store.root / name
    if old is not None and old != fp and folder.exists():
        store.stage(name).close()
        folder.rename(store.root / f"{name}.{old}")
    fps[name] = fp
    return fp


def _is_correct(t: Trajectory) -> bool:
    return bool(t.rewards) and min(t.rewards.values()) >= 1.0


def _count_calls(funnel: Funnel, t: Trajectory) -> None:
    calls = [c for m in t.messages for c in (m.tool_calls or [])]
    funnel.with_tool_call += bool(calls)
    funnel.well_formed_call += any(c.function.arguments is not None for c in calls)


def run_later_stages(cfg: RunConfig, store: RunStore, tasks: list[Task]) -> Funnel:
    """Score, filter and export the run's trajectories; return the funnel."""
    funnel = Funnel(tasks=len(tasks))
    task_ids = {t.id for t in tasks}
    current = [t for t in iter_trajectories(store.stage(ROLLOUT)) if t.task_id in task_ids]
    funnel.trajectories = len(current)
    for t in current:
        _count_calls(funnel, t)
    fp = store.manifest.get("fingerprint", "")
    if cfg.score.rewards:
        fp = _reset_if_changed(store, SCORE, cfg.score, fp)
        by_id = {t.id: t for t in tasks}
        stage = store.stage(SCORE)
        funnel.score_failed = asyncio.run(
            run_score_stage(cfg.score, current, by_id, stage, store.failures)
        )
        ids = {t.id for t in current}
        current = [t for t in iter_trajectories(stage) if t.id in ids]
        funnel.scored = len(current)
        funnel.correct = sum(_is_correct(t) for t in current)
        stage.write_stats({"scored": len(current), "failed": dict(funnel.score_failed)})
    current = _filter(cfg, store, current, funnel)
    _export(cfg, store, current, funnel)
    store.record_stage("funnel", **_funnel_dict(funnel))
    return funnel


def _filter(
    cfg: RunConfig, store: RunStore, trajs: list[Trajectory], funnel: Funnel
) -> list[Trajectory]:
    if cfg.filter is None:
        funnel.kept = len(trajs)
        return trajs
    funnel.filtered = True
    kept, dropped = [], []
    for t in trajs:
        reason = drop_reason(t, cfg.filter)
        if reason is None:
            kept.append(t)
        else:
            funnel.dropped[reason] += 1
            dropped.append(orjson.dumps({"reason": reason, "record": t.to_dict()}))
    folder = store.root / FILTER
    folder.mkdir(exist_ok=True)
    write_atomic(folder / "records.jsonl", b"".join(t.to_json() + b"\n" for t in kept))
    write_atomic(folder / "dropped.jsonl", b"".join(d + b"\n" for d in dropped))
    store.stage(FILTER).write_stats(
        {"input": len(trajs), "kept": len(kept), "dropped": dict(funnel.dropped)}
    )
    funnel.kept = len(kept)
    return kept


def _export(cfg: RunConfig, store: RunStore, trajs: list[Trajectory], funnel: Funnel) -> None:
    folder = store.root / EXPORT
    for ex in cfg.export:
        lines, skipped = export_lines(trajs, ex.include_reasoning, ex.format)
        folder.mkdir(exist_ok=True)
        write_atomic(folder / ex.path, b"".join(lines))
        funnel.exported[str(Path(EXPORT) / ex.path)] = len(lines)
        funnel.export_skipped.update(skipped)
    if cfg.export:
        stats = {"exported": funnel.exported, "skipped": dict(funnel.export_skipped)}
        store.stage(EXPORT).write_stats(stats)


def export_lines(
    trajs: list[Trajectory], include_reasoning: bool = False, fmt: str = "trl-sft"
) -> tuple[list[bytes], Counter[str]]:
    """JSONL lines of `fmt` for `trajs`, and the count of records refused, by reason."""
    records, skipped = export_records(fmt, trajs, include_reasoning)
    return [orjson.dumps(r) + b"\n" for r in records], skipped


def _funnel_dict(f: Funnel) -> dict[str, Any]:
    return {
        "tasks": f.tasks,
        "trajectories": f.trajectories,
        "with_tool_call": f.with_tool_call,
        "well_formed_call": f.well_formed_call,
        "scored": f.scored,
        "correct": f.correct,
        "kept": f.kept,
        "dropped": dict(f.dropped),
        "exported": f.exported,
        "export_skipped": dict(f.export_skipped),
        "score_failed": dict(f.score_failed),
    }
