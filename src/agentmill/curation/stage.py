"""Dedup -> decontaminate -> balance: run stages after filter (and judge), and file commands.

In a run folder each configured stage writes, whole and atomically::

    <stage>/records.jsonl   the records kept, in input order (balance: upsampled copies last)
    <stage>/dropped.jsonl   {"reason", "record", ...}: dedup adds `kept_id` (the member of the
                            cluster that was kept), decontaminate `eval_set` and `ngram` (the
                            shared n-gram, normalized), balance `key`
    <stage>/stats.json      input, kept, dropped by reason; decontaminate per eval set (items,
                            hits); balance `before` / `after` per key; `input_key`

Each stage has its own fingerprint (its config, chained after score, judge, filter and the
curation stages before it): when it changes, the old folder is moved aside
(`<stage>.<old fingerprint>/`, never deleted) and rebuilt, with every curation stage after it.
When neither the fingerprint nor `input_key` (a hash of the input records; for decontaminate
also of the eval files, for balance of each record's key) changed, the stage is not
recomputed: its records are read back.

>>> from agentmill.records import Message, Trajectory
>>> ts = [Trajectory(id=i, task_id=i, messages=[Message(role="user", content="Hi there")])
...       for i in ("a", "b")]
>>> out = dedup_stage(ts, DedupConfig(), {})
>>> [t.id for t in out.kept], out.dropped[0]["kept_id"], out.stats["dropped"]
(['a'], 'a', {'exact_duplicate': 1})
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import ValidationError

from agentmill.curation.balance import balance, key_of
from agentmill.curation.decontaminate import EvalIndex
from agentmill.curation.dedup import dedup
from agentmill.curation.dedup_config import BalanceConfig, DecontamConfig, DedupConfig
from agentmill.errors import UserError
from agentmill.records import Task, Trajectory, content_hash
from agentmill.store import RunStore, write_atomic

if TYPE_CHECKING:
    from agentmill.config import RunConfig
    from agentmill.fileops import FileResult

CURATION_STAGES = ("dedup", "decontaminate", "balance")
UPSTREAM_STAGES = ("score", "judge")  # their fingerprints feed the first curation stage's


@dataclass
class Curated:
    """One stage's output: the kept records, the dropped lines, the stats."""

    kept: list[Trajectory]
    dropped: list[dict[str, Any]]
    stats: dict[str, Any]


def _stats(n_in: int, kept: list[Trajectory], dropped: list[dict[str, Any]]) -> dict[str, Any]:
    reasons = Counter(d["reason"] for d in dropped)
    return {"input": n_in, "kept": len(kept), "dropped": dict(reasons.most_common())}


def dedup_stage(trajs: list[Trajectory], cfg: DedupConfig, tasks: Mapping[str, Task]) -> Curated:
    """Exact and near duplicates of `cfg.field` dropped; the best-scored member of each kept."""
    res = dedup(trajs, cfg)
    dropped = [{"reason": why, "kept_id": k, "record": t.to_dict()} for t, why, k in res.dropped]
    return Curated(res.kept, dropped, _stats(len(trajs), res.kept, dropped) | {"field": cfg.field})


def decontaminate_stage(
    trajs: list[Trajectory], cfg: DecontamConfig, tasks: Mapping[str, Task]
) -> Curated:
    """Records sharing an n-gram with an eval set dropped, with the set's name and the n-gram."""
    index = EvalIndex.build(cfg)
    kept, dropped = [], []
    for t in trajs:
        found = index.match_record(t)
        if found is None:
            kept.append(t)
            continue
        name, gram = found
        line = {"reason": f"contaminated:{name}", "eval_set": name, "ngram": gram}
        dropped.append(line | {"record": t.to_dict()})
    hits = Counter(d["eval_set"] for d in dropped)
    pairs = zip(index.files, index.items, strict=True)
    sets = {name: {"items": n, "hits": hits[name]} for name, n in pairs}
    return Curated(kept, dropped, _stats(len(trajs), kept, dropped) | {"eval_sets": sets})


def balance_stage(
    trajs: list[Trajectory], cfg: BalanceConfig, tasks: Mapping[str, Task]
) -> Curated:
    """Capped or resampled per key; the stats carry the counts per key before and after."""
    res = balance(trajs, cfg, tasks)
    dropped = [
        {"reason": why, "key": why.partition(":")[2], "record": t.to_dict()}
        for t, why in res.dropped
    ]
    stats = _stats(len(trajs), res.kept, dropped)
    upsampled = len(res.kept) - (len(trajs) - len(dropped))
    extra = {"key": cfg.key, "mode": cfg.mode, "upsampled": upsampled}
    return Curated(res.kept, dropped, stats | extra | {"before": res.before, "after": res.after})


StageFn = Callable[[list[Trajectory], Any, Mapping[str, Task]], Curated]
APPLY: dict[str, StageFn] = {
    "dedup": dedup_stage,
    "decontaminate": decontaminate_stage,
    "balance": balance_stage,
}


def input_key(name: str, cfg: Any, trajs: list[Trajectory], tasks: Mapping[str, Task]) -> str:
    """A hash of everything besides the config that the stage's output depends on."""
    h = hashlib.blake2b(digest_size=16)
    for t in trajs:
        h.update(t.to_json() + b"\n")
    if name == "decontaminate":
        for path, set_name in cfg.sets():
            with Path(path).open("rb") as f:
                h.update(set_name.encode() + hashlib.file_digest(f, "blake2b").digest())
    if name == "balance":
        h.update(orjson.dumps([key_of(t, cfg.key, tasks.get(t.task_id)) for t in trajs]))
    return h.hexdigest()


# ---------------------------------------------------------------- in a run
def run_curation(
    cfg: RunConfig,
    store: RunStore,
    trajs: list[Trajectory],
    tasks: list[Task],
    out: dict[str, dict[str, Any]],
) -> list[Trajectory]:
    """Run the configured curation stages in order on `trajs`; put each one's stats in `out`."""
    from agentmill.stages import _reset_if_changed  # agentmill.stages imports this module

    by_id = {t.id: t for t in tasks}
    upstream = _upstream(cfg, store)
    for name in CURATION_STAGES:
        stage_cfg = getattr(cfg, name)
        if stage_cfg is None and not (store.root / name).exists():
            continue
        fp = _reset_if_changed(store, name, stage_cfg, upstream)
        if stage_cfg is None:  # taken out of the config: its old folder was just moved aside
            continue
        upstream = fp
        trajs, out[name] = _run_stage(store, name, stage_cfg, trajs, by_id)
    return trajs


def _upstream(cfg: RunConfig, store: RunStore) -> str:
    fps = store.manifest.get("stage_fingerprints", {})
    filt = cfg.filter.model_dump(mode="json") if cfg.filter is not None else None
    before = [fps.get(s) for s in UPSTREAM_STAGES]
    return content_hash([store.manifest.get("fingerprint"), before, filt])


def _run_stage(
    store: RunStore, name: str, cfg: Any, trajs: list[Trajectory], tasks: Mapping[str, Task]
) -> tuple[list[Trajectory], dict[str, Any]]:
    stage = store.stage(name)
    key = input_key(name, cfg, trajs, tasks)
    stats = stage.read_stats()
    if stats.get("input_key") == key and stage.records_path.exists():
        kept = [Trajectory.model_validate(r) for r in stage.iter_records()]
        return kept, _public(stats) | {"reused": True}
    cur = APPLY[name](trajs, cfg, tasks)
    stage.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(stage.records_path, _lines(t.to_json() for t in cur.kept))
    write_atomic(stage.dir / "dropped.jsonl", _lines(orjson.dumps(d) for d in cur.dropped))
    stage.write_stats(cur.stats | {"input_key": key})  # last: it marks the stage complete
    return cur.kept, cur.stats


def _public(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in stats.items() if k != "input_key"}


def _lines(items: Iterable[bytes]) -> bytes:
    return b"".join(item + b"\n" for item in items)


def curation_status(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The stats of each curation stage a run folder has, read from `<stage>/stats.json`."""
    out = {}
    for name in CURATION_STAGES:
        path = run_dir / name / "stats.json"
        if path.exists():
            out[name] = _public(orjson.loads(path.read_bytes()))
    return out


def funnel_lines(curation: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Drops per curation stage by reason, and balance's counts per key before -> after.

    >>> funnel_lines({"dedup": {"dropped": {"near_duplicate": 2}}})
    ['dedup dropped near_duplicate: 2']
    """
    lines = []
    for name, st in curation.items():
        lines += [f"{name} dropped {why}: {n}" for why, n in st.get("dropped", {}).items()]
        if st.get("before"):
            mix = ", ".join(f"{k} {n} -> {st['after'].get(k, 0)}" for k, n in st["before"].items())
            lines.append(f"{name} by {st['key']}: {mix}")
    return lines


# ---------------------------------------------------------------- on files
def dropped_path(out: Path) -> Path:
    """Where a file command writes its drops: `x.jsonl` -> `x.dropped.jsonl`."""
    return out.with_name(out.stem + ".dropped.jsonl")


def curate_file(
    name: str,
    src: Path,
    out: Path,
    cfg: Any,
    strict: bool = False,
    tasks_path: Path | None = None,
) -> tuple[FileResult, dict[str, Any]]:
    """Run one curation stage on a trajectories file (or a run folder's latest output)."""
    from agentmill.fileops import FileResult, read_trajectories  # fileops imports stages

    result = FileResult(out=out)
    trajs = read_trajectories(src, result, strict)
    tasks = _tasks_for(cfg, tasks_path, src) if name == "balance" else {}
    cur = APPLY[name](trajs, cfg, tasks)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, _lines(t.to_json() for t in cur.kept))
    write_atomic(dropped_path(out), _lines(orjson.dumps(d) for d in cur.dropped))
    result.written = len(cur.kept)
    result.dropped.update(cur.stats["dropped"])
    return result, cur.stats


def _tasks_for(cfg: BalanceConfig, tasks_path: Path | None, src: Path) -> dict[str, Task]:
    """The tasks a key that reads the task needs: `tasks_path`, else the run's source."""
    from agentmill.fileops import read_tasks

    if cfg.key != "category" and not cfg.key.startswith("task."):
        return {}
    if tasks_path is not None and not tasks_path.is_file():
        raise UserError(f"--tasks: file not found: {tasks_path}; pass the run's source records")
    try:
        return read_tasks(tasks_path, src)
    except (orjson.JSONDecodeError, ValidationError):
        raise UserError(
            f"--tasks {tasks_path}: not a file of agentmill tasks; pass <run>/source/records.jsonl"
        ) from None
