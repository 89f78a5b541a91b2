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
from agentmill.curation.stage import run_curation
from agentmill.errors import UserError
from agentmill.records import Task, Trajectory, content_hash
from agentmill.scoring.judge_stage import JUDGE, judge_fingerprint, run_judge_stage
from agentmill.scoring.stage import run_score_stage
from agentmill.sources.traces import write_tasks_out
from agentmill.store import RunStore, Stage, write_atomic

SOURCE, ROLLOUT, SCORE, FILTER, EXPORT = "source", "rollout", "score", "filter", "export"


@dataclass
class Funnel:
    """How many records survive each step; printed at the end of a run."""

    tasks: int = 0
    trajectories: int = 0
    with_tool_call: int = 0
    well_formed_call: int = 0
    correct: int = 0
    scored: int = 0
    carried: int = 0  # kept records of earlier runs (`carry`), joined before the filter
    kept: int = 0
    filtered: bool = False
    dropped: Counter[str] = field(default_factory=Counter)
    exported: dict[str, int] = field(default_factory=dict)
    export_skipped: Counter[str] = field(default_factory=Counter)
    score_failed: Counter[str] = field(default_factory=Counter)
    curation: dict[str, dict[str, Any]] = field(default_factory=dict)  # stats per stage
    judged: Counter[str] = field(default_factory=Counter)  # latest verdicts: GOOD, BAD, ERROR
    tasks_out: dict[str, Any] = field(default_factory=dict)  # path, added, already


def iter_trajectories(stage: Stage) -> Iterator[Trajectory]:
    for rec in stage.iter_records():
        yield Trajectory.model_validate(rec)


def _reset_if_changed(store: RunStore, name: str, cfg: Any, upstream: str) -> str:
    """Move the stage's folder aside when its config (or an upstream one) changed."""
    view = cfg.model_dump(mode="json") if hasattr(cfg, "model_dump") else cfg
    fp = content_hash([upstream, view])
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


def run_later_stages(
    cfg: RunConfig, store: RunStore, tasks: list[Task], no_cache: bool = False
) -> Funnel:
    """Score, filter, judge, curate and export the run's trajectories; return the funnel."""
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
    if cfg.carry:
        carried, more = carried_records(cfg.carry, store.root, current, tasks)
        funnel.carried, current, tasks = len(carried), current + carried, tasks + more
    current = _filter(cfg, store, current, funnel)
    current = _judge(cfg, store, current, funnel, no_cache)
    current = run_curation(cfg, store, current, tasks, funnel.curation)  # dedup, decontam, balance
    _export(cfg, store, current, funnel, tasks)
    if cfg.tasks_out is not None:  # feedback runs: the kept trajectories' tasks, appended
        by_id = {t.id: t for t in tasks}
        funnel.tasks_out = write_tasks_out(cfg.tasks_out, current, by_id, store.root)
    store.record_stage("funnel", **funnel_dict(funnel))
    return funnel


def carried_records(
    folders: list[Path], root: Path, current: list[Trajectory], tasks: list[Task]
) -> tuple[list[Trajectory], list[Task]]:
    """The records the filters of earlier runs kept (`<run>/filter/records.jsonl`, in the
    order of `folders`), less any already present by id, and the tasks they need that `tasks`
    lack (from `<run>/source/records.jsonl`)."""
    from agentmill.fileops import read_tasks

    seen = {t.id for t in current}
    have = {t.id for t in tasks}
    out: list[Trajectory] = []
    more: list[Task] = []
    for folder in folders:
        kept = Stage(folder, FILTER)
        if folder.resolve() == root.resolve():
            raise UserError(f"carry: {folder} is this run's own folder; carry earlier runs only")
        if not kept.records_path.is_file():
            raise UserError(
                f"carry: {folder} has no kept records ({kept.records_path} is missing); carry "
                "the folder of a finished run whose config has a filter"
            )
        recs = [t for t in iter_trajectories(kept) if t.id not in seen]
        seen.update(t.id for t in recs)
        out += recs
        need = {t.task_id for t in recs} - have
        if need:
            found = read_tasks(folder / SOURCE / "records.jsonl", kept.records_path)
            more += [found[i] for i in sorted(need) if i in found]
            need -= set(found)
        if need:
            raise UserError(
                f"carry: {folder}/{SOURCE}/records.jsonl lacks the tasks of {len(need)} kept "
                f"records (e.g. {min(need)}); carry the run folder itself, not a copy of its "
                "filter output"
            )
        have.update(t.id for t in more)
    return out, more


def _judge(
    cfg: RunConfig, store: RunStore, trajs: list[Trajectory], funnel: Funnel, no_cache: bool
) -> list[Trajectory]:
    """The LLM judge (scoring/judge_stage.py); its verdicts depend on the rollout only."""
    if cfg.judge is None:
        store.manifest.setdefault("stage_fingerprints", {}).pop(JUDGE, None)
        return trajs
    _reset_if_changed(store, JUDGE, judge_fingerprint(cfg), store.manifest.get("fingerprint", ""))
    return run_judge_stage(cfg, store, trajs, funnel, no_cache)


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


def _export(
    cfg: RunConfig, store: RunStore, trajs: list[Trajectory], funnel: Funnel, tasks: list[Task]
) -> None:
    """Every `export:` entry (export/write.py); verl and trl-grpo rows come from `tasks`."""
    from agentmill.export.write import write_export

    by_id, notes = {t.id: t for t in tasks}, []
    for ex in cfg.export:
        result = write_export(ex, trajs, by_id, store.root / EXPORT / ex.path, store.root)
        for path, n in result.written.items():
            funnel.exported[path.relative_to(store.root).as_posix()] = n
        funnel.export_skipped.update(result.skipped)
        notes += result.notes
    if cfg.export:
        stats = {"exported": funnel.exported, "skipped": dict(funnel.export_skipped)}
        store.stage(EXPORT).write_stats({**stats, "notes": notes})


def funnel_dict(f: Funnel) -> dict[str, Any]:
    return {
        "tasks": f.tasks,
        "trajectories": f.trajectories,
        "with_tool_call": f.with_tool_call,
        "well_formed_call": f.well_formed_call,
        "scored": f.scored,
        "correct": f.correct,
        "carried": f.carried,
        "kept": f.kept,
        "filtered": f.filtered,
        "dropped": dict(f.dropped),
        "exported": f.exported,
        "export_skipped": dict(f.export_skipped),
        "score_failed": dict(f.score_failed),
        "curation": f.curation,
        "judged": dict(f.judged),
        "tasks_out": f.tasks_out,
    }
