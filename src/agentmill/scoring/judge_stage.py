"""The judge stage of a run, and `agentmill judge` on a file. Verdicts are stored per
trajectory as they come, so a killed judging run resumes without paying for one twice.

In a run folder:

    judge/verdicts.jsonl   every verdict, appended as made: {"id": <trajectory id>, "verdict": ...}
    judge/records.jsonl    the kept trajectories (verdict appended), rewritten on every run
    judge/dropped.jsonl    {"reason": "judge_bad" | "judge_error", "record": ...}
    judge/stats.json       verdict counts, kept, model calls

A trajectory whose latest verdict is GOOD or BAD is never judged again (resume, top-up, a
changed reward or filter); one whose latest verdict is ERROR is retried on the next run,
as a fresh sample (the response cache is keyed by the attempt number). `keep` is applied to
the stored verdicts, so changing it never re-judges.

>>> # agentmill judge runs/q -o judged.jsonl --embedded   (see cli/judge.py)
"""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from agentmill.records import Trajectory, Verdict, content_hash
from agentmill.scoring.judge import judge_trajectory
from agentmill.scoring.judge_config import JudgeConfig
from agentmill.store import JsonlWriter, iter_jsonl, write_atomic

if TYPE_CHECKING:
    from agentmill.backends.instrumented import Instrumented
    from agentmill.cache import ResponseCache
    from agentmill.config import RunConfig
    from agentmill.stages import Funnel
    from agentmill.store import RunStore

JUDGE = "judge"
VERDICTS = "verdicts.jsonl"
Record = Callable[[Trajectory, Verdict], None]


# ---------------------------------------------------------------- shared parts
def judge_backend(
    name: str,
    bcfg: Any,
    seed: int = 0,
    cache: ResponseCache | None = None,
    call_log: JsonlWriter | None = None,
) -> Instrumented:
    """The judge's backend wrapped with the response cache and the call log."""
    from agentmill.backends import build_backend
    from agentmill.backends.instrumented import Instrumented
    from agentmill.config import config_view

    fp = content_hash(config_view(bcfg, "fingerprint"))
    return Instrumented(build_backend(name, bcfg), fp, seed, cache=cache, call_log=call_log)


def read_verdicts(path: Path) -> tuple[dict[str, Verdict], Counter[str]]:
    """The latest verdict per trajectory id, and how many ERROR verdicts each id has had."""
    latest: dict[str, Verdict] = {}
    errors: Counter[str] = Counter()
    for _, line in iter_jsonl(path):
        d = orjson.loads(line)
        v = Verdict.model_validate(d["verdict"])
        latest[d["id"]] = v
        errors[d["id"]] += v.verdict == "ERROR"
    return latest, errors


def is_done(v: Verdict | None) -> bool:
    return v is not None and v.verdict != "ERROR"


async def judge_all(
    backend: Instrumented,
    trajs: list[Trajectory],
    cfg: JudgeConfig,
    attempts: Counter[str],
    record: Record,
    show_progress: bool = True,
) -> None:
    """Judge every trajectory, at most `cfg.max_concurrency` at once; `record` each verdict
    the moment it is made. The backend is readied first and closed at the end."""
    from agentmill.progress import progress_bar

    sem = asyncio.Semaphore(cfg.max_concurrency)

    async def one(t: Trajectory, advance: Callable[[], None]) -> None:
        async with sem:
            v = await judge_trajectory(backend, t, cfg, attempts[t.id])
        record(t, v)
        advance()

    try:
        await _prepare(backend.backend)
        with progress_bar("judge", len(trajs), enabled=show_progress) as advance:
            await asyncio.gather(*(one(t, advance) for t in trajs))
    finally:
        await backend.aclose()


async def _prepare(backend: object) -> None:
    """Fail fast on a dead endpoint; load an in-process model once."""
    if hasattr(backend, "check_reachable"):
        await backend.check_reachable()
    if hasattr(backend, "load"):
        await asyncio.to_thread(backend.load)


def with_verdict(t: Trajectory, v: Verdict) -> Trajectory:
    return t.model_copy(update={"verdicts": [*t.verdicts, v]})


def drop_line(t: Trajectory, v: Verdict | None) -> bytes:
    reason = "judge_bad" if v is not None and v.verdict == "BAD" else "judge_error"
    rec = with_verdict(t, v) if v is not None else t
    return orjson.dumps({"reason": reason, "record": rec.to_dict()})


def show_reason(t: Trajectory, v: Verdict) -> None:
    """`print_reason`: one line per verdict on stderr."""
    print(f"judge {v.verdict:<5} {t.id}: {v.reason}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the run stage
def judge_fingerprint(cfg: RunConfig) -> dict[str, Any]:
    """What changes verdicts: the judge's prompt settings and its backend's model settings."""
    from agentmill.config import config_view

    assert cfg.judge is not None
    return {
        "judge": config_view(cfg.judge, "fingerprint"),
        "backend": config_view(cfg.backends[cfg.judge.backend], "fingerprint"),
    }


def run_judge_stage(
    cfg: RunConfig, store: RunStore, trajs: list[Trajectory], funnel: Funnel, no_cache: bool
) -> list[Trajectory]:
    """Judge the trajectories not judged yet; return those whose verdict is in `keep`."""
    jcfg = cfg.judge
    assert jcfg is not None
    stage = store.stage(JUDGE)
    latest, attempts = read_verdicts(stage.dir / VERDICTS)
    todo = [t for t in trajs if not is_done(latest.get(t.id))]
    calls = _judge_todo(cfg, store, todo, latest, attempts, no_cache) if todo else (0, 0)
    kept, dropped = _apply_keep(trajs, latest, jcfg.keep)
    counts = Counter(latest[t.id].verdict for t in trajs if t.id in latest)
    drops = Counter(orjson.loads(d)["reason"] for d in dropped)
    stage.dir.mkdir(parents=True, exist_ok=True)
    write_atomic(stage.records_path, b"".join(t.to_json() + b"\n" for t in kept))
    write_atomic(stage.dir / "dropped.jsonl", b"".join(d + b"\n" for d in dropped))
    stats = {"input": len(trajs), "verdicts": dict(counts), "kept": len(kept)}
    stage.write_stats(
        stats | {"dropped": dict(drops), "model_calls": calls[0], "cache_hits": calls[1]}
    )
    funnel.judged, funnel.kept, funnel.filtered = counts, len(kept), True
    funnel.dropped.update(drops)
    return kept


def _judge_todo(
    cfg: RunConfig,
    store: RunStore,
    todo: list[Trajectory],
    latest: dict[str, Verdict],
    attempts: Counter[str],
    no_cache: bool,
) -> tuple[int, int]:
    """Judge `todo`, appending each verdict to the log; returns (model calls, cache hits)."""
    from agentmill.cache import ResponseCache
    from agentmill.pipeline import default_cache_path

    jcfg = cfg.judge
    assert jcfg is not None
    use_cache = cfg.cache.enabled and not no_cache
    cache = ResponseCache(cfg.cache.path or default_cache_path()) if use_cache else None
    backend = judge_backend(jcfg.backend, cfg.backends[jcfg.backend], cfg.seed, cache, store.calls)
    log = JsonlWriter(store.stage(JUDGE).dir / VERDICTS)

    def record(t: Trajectory, v: Verdict) -> None:
        log.append(orjson.dumps({"id": t.id, "verdict": v.to_dict()}))
        latest[t.id] = v
        if v.verdict == "ERROR":
            store.failures.add(JUDGE, t.id, "judge_error", v.reason)
        if jcfg.print_reason:
            show_reason(t, v)

    try:
        asyncio.run(judge_all(backend, todo, jcfg, attempts, record))
    finally:
        log.close()
    return backend.calls, backend.cache_hits


def _apply_keep(
    trajs: Iterable[Trajectory], latest: dict[str, Verdict], keep: list[str]
) -> tuple[list[Trajectory], list[bytes]]:
    kept, dropped = [], []
    for t in trajs:
        v = latest.get(t.id)
        if v is not None and v.verdict in keep:
            kept.append(with_verdict(t, v))
        else:
            dropped.append(drop_line(t, v))
    return kept, dropped


# ---------------------------------------------------------------- on a file
@dataclass
class JudgeFileResult:
    """What `agentmill judge` did; `verdicts` counts this session's verdicts."""

    out: Path
    dropped_path: Path
    read: int = 0
    already: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)


def side_paths(out: Path) -> tuple[Path, Path]:
    """`<out stem>.dropped.jsonl` (BAD) and `<out stem>.errors.jsonl` (ERROR, retried)."""
    return out.with_name(out.stem + ".dropped.jsonl"), out.with_name(out.stem + ".errors.jsonl")


def _judged_ids(out: Path, dropped: Path) -> set[str]:
    ids = {orjson.loads(line)["id"] for _, line in iter_jsonl(out)}
    return ids | {orjson.loads(line)["record"]["id"] for _, line in iter_jsonl(dropped)}


def judge_file(
    src: Path,
    out: Path,
    jcfg: JudgeConfig,
    bcfg: Any,
    name: str = "judge",
    strict: bool = False,
    show_progress: bool = True,
) -> JudgeFileResult:
    """Judge the trajectories of `src` (JSONL or run folder) into `out`, resumably: kept ones
    are appended to `out`, BAD ones to `<out>.dropped.jsonl`, ERROR ones to
    `<out>.errors.jsonl` (and judged again on the next run)."""
    from agentmill.fileops import FileResult, read_trajectories

    dropped_path, errors_path = side_paths(out)
    res = JudgeFileResult(out=out, dropped_path=dropped_path)
    read = FileResult()
    trajs = read_trajectories(src, read, strict)
    res.read, res.bad = read.read, read.bad
    done = _judged_ids(out, dropped_path)
    todo = [t for t in trajs if t.id not in done]
    res.already = len(trajs) - len(todo)
    if not todo:
        return res
    _, attempts = read_verdicts(errors_path)
    writers = {
        k: JsonlWriter(p) for k, p in (("out", out), ("drop", dropped_path), ("err", errors_path))
    }
    record = _file_recorder(writers, jcfg, res)
    backend = judge_backend(name, bcfg)
    try:
        asyncio.run(judge_all(backend, todo, jcfg, attempts, record, show_progress))
    finally:
        for w in writers.values():
            w.close()
    return res


def _file_recorder(
    writers: dict[str, JsonlWriter], jcfg: JudgeConfig, res: JudgeFileResult
) -> Record:
    def record(t: Trajectory, v: Verdict) -> None:
        res.verdicts[v.verdict] += 1
        if v.verdict == "ERROR":
            writers["err"].append(orjson.dumps({"id": t.id, "verdict": v.to_dict()}))
        elif v.verdict in jcfg.keep:
            writers["out"].append(with_verdict(t, v).to_json())
        else:
            writers["drop"].append(drop_line(t, v))
        if jcfg.print_reason:
            show_reason(t, v)

    return record
