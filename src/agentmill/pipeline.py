"""The pipeline `agentmill run` executes, in a resumable run folder:
sources -> rollout (agent loop) -> score -> filter -> export.

Each stage reads records and writes records. Failures are caught here, at the stage
boundary, and become a line in failures.jsonl and a count in the stage stats.

>>> # agentmill.pipeline.run(load_config(Path("examples/quickstart.yaml")), out=Path("runs/q"))
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmill.backends import BackendError, build_backend
from agentmill.backends.instrumented import Instrumented
from agentmill.cache import ResponseCache
from agentmill.config import RunConfig, config_view
from agentmill.errors import UserError
from agentmill.progress import progress_bar
from agentmill.records import Message, SamplingParams, Task, Trajectory, content_hash
from agentmill.rollout.agent import Agent, AgentResult
from agentmill.rollout.tools import build_tools
from agentmill.runs import open_run
from agentmill.sources import Bad, iter_source
from agentmill.sources.traces import TraceCounts, trace_items
from agentmill.stages import ROLLOUT, SOURCE, Funnel, run_later_stages
from agentmill.store import RunStore


@dataclass
class RunSummary:
    """What one `agentmill run` did; `exit_code` follows the CLI reference."""

    run_dir: Path
    tasks: int = 0
    bad_records: int = 0
    expected: int = 0
    done: int = 0
    made: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    model_calls: int = 0
    cache_hits: int = 0
    seconds: float = 0.0
    topped_up: list[str] = field(default_factory=list)
    dry_run: bool = False
    funnel: Funnel | None = None
    report: Path | None = None  # report.html, once written
    report_error: str | None = None  # why it could not be (the run's data is unaffected)
    traces: TraceCounts = field(default_factory=TraceCounts)  # trace sources: nothing sampled

    @property
    def pending(self) -> int:
        return self.expected - self.done - sum(self.failed.values())

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def default_cache_path() -> Path:
    from agentmill.models import cache_root

    return cache_root() / "responses.sqlite"


def run(
    cfg: RunConfig,
    out: Path | None = None,
    *,
    new: bool = False,
    limit: int | None = None,
    dry_run: bool = False,
    no_cache: bool = False,
    show_progress: bool = True,
) -> RunSummary:
    """Run (or resume, or top up) the pipeline of `cfg` in its run folder."""
    store, grown = open_run(cfg, out, new=new)
    summary = RunSummary(run_dir=store.root, topped_up=grown, dry_run=dry_run)
    start = time.time()
    try:
        tasks = source_stage(cfg, store, limit, summary, no_cache)
        sampled = [t for t in tasks if t.id not in summary.traces.task_ids]
        if dry_run:
            _plan_rollout(cfg, store, sampled, summary)
        elif cfg.needs_rollout():
            asyncio.run(rollout_stage(cfg, store, sampled, summary, no_cache, show_progress))
        _add_traced(cfg, store, summary)
        if not dry_run:
            summary.funnel = run_later_stages(cfg, store, tasks, no_cache)
    finally:
        summary.seconds = time.time() - start
        store.manifest["sessions"][-1].update(finished_at=time.time(), seconds=summary.seconds)
        store.save_manifest()
        store.close()
    if not dry_run and cfg.report:
        _write_report(store.root, summary)
    return summary


def _write_report(run_dir: Path, summary: RunSummary) -> None:
    """report.html in the run folder; a report that cannot be written is a warning, never a
    failed run (`agentmill report RUN -o FILE` retries it)."""
    from agentmill.report.html import write_report

    try:
        summary.report = write_report(run_dir, run_dir / "report.html")
    except Exception as e:  # noqa: BLE001 - the run's records are already safe on disk
        summary.report_error = f"{type(e).__name__}: {e}"


# ---------------------------------------------------------------- source stage
def source_stage(
    cfg: RunConfig,
    store: RunStore,
    limit: int | None,
    summary: RunSummary,
    no_cache: bool = False,
) -> list[Task]:
    """Read every source; append new tasks to source/records.jsonl; count bad records.

    A synth source's dropped candidates are not bad records (they are the checks working):
    they go to failures.jsonl and to `synth_dropped` in the stats, and never count toward
    `strict` / `max_bad_fraction`; its model calls go to calls.jsonl like the rollout's."""
    stage = store.stage(SOURCE)
    known = stage.done_keys("id")
    tasks: dict[str, Task] = {}
    bad: Counter[str] = Counter()
    synth_dropped: Counter[str] = Counter()
    duplicates = 0
    for src in cfg.sources:
        if src.type == "synth":
            if summary.dry_run:  # a dry run makes no model calls
                continue
            src.run_context(call_log=store.calls, no_cache=no_cache)
        if src.type == "traces":  # writes the traces' trajectories into the rollout stage
            items = trace_items(src, store.stage(ROLLOUT), summary.traces)
        else:
            items = iter_source(src)
        for item in items:
            if isinstance(item, Bad):
                synth = src.type == "synth"
                (synth_dropped if synth else bad)[item.reason] += 1
                store.failures.add(SOURCE, item.key, item.reason, item.detail)
                continue
            if item.id in tasks:
                duplicates += 1
                continue
            tasks[item.id] = item
            if item.id not in known:
                stage.writer().append(item.to_json())
            if limit is not None and len(tasks) >= limit:
                break
    summary.tasks, summary.bad_records = len(tasks), sum(bad.values())
    _check_bad_fraction(cfg, summary)
    stats = {
        "tasks": len(tasks),
        "bad_records": dict(bad),
        "duplicates": duplicates,
        "stored": len(known | set(tasks)),
    }
    if synth_dropped:
        stats["synth_dropped"] = dict(synth_dropped)
    stage.write_stats(stats)
    store.record_stage(SOURCE, **stats)
    return list(tasks.values())


def _add_traced(cfg: RunConfig, store: RunStore, s: RunSummary) -> None:
    """Trajectories read from traces count as rollout work already done."""
    tc = s.traces
    if not tc.trajectories:
        return
    s.expected += tc.trajectories
    s.done += tc.trajectories
    s.made += tc.new
    if not cfg.needs_rollout():
        _write_rollout_stats(store, s, 0.0)
    store.record_stage(ROLLOUT, from_traces=tc.trajectories, new_from_traces=tc.new)


def _check_bad_fraction(cfg: RunConfig, s: RunSummary) -> None:
    total = s.tasks + s.bad_records
    if not s.bad_records:
        return
    where = f"see {s.run_dir / 'failures.jsonl'}"
    if cfg.strict:
        raise UserError(
            f"{s.bad_records} bad record(s) in the sources ({where}); fix them or drop strict"
        )
    limit = cfg.max_bad_fraction
    if limit is not None and s.bad_records / total > limit:
        raise UserError(
            f"{s.bad_records} of {total} source records are bad, over max_bad_fraction "
            f"{limit} ({where}); fix them or raise the limit"
        )


# ---------------------------------------------------------------- rollout stage
def _work(cfg: RunConfig, tasks: list[Task], done: set[str]) -> list[tuple[Task, int]]:
    return [(t, i) for t in tasks for i in range(cfg.rollout.n) if f"{t.id}#{i}" not in done]


def _plan_rollout(cfg: RunConfig, store: RunStore, tasks: list[Task], summary: RunSummary) -> None:
    done = store.stage(ROLLOUT).done_keys("task_id#sample_index")
    summary.expected = len(tasks) * cfg.rollout.n
    summary.done = summary.expected - len(_work(cfg, tasks, done))


def _prompt(task: Task, system: str | None) -> list[Message]:
    if system and task.prompt[0].role != "system":
        return [Message(role="system", content=system), *task.prompt]
    return task.prompt


def _params(base: SamplingParams, sample_index: int) -> SamplingParams:
    if base.seed is None:
        return base
    return base.model_copy(update={"seed": base.seed + sample_index})


def _instrumented(cfg: RunConfig, store: RunStore, no_cache: bool) -> Instrumented:
    name = cfg.rollout.backend
    bcfg = cfg.backends[name]
    cache = None
    if cfg.cache.enabled and not no_cache:
        cache = ResponseCache(cfg.cache.path or default_cache_path())
    backend = build_backend(name, bcfg)
    return Instrumented(
        backend,
        content_hash(config_view(bcfg, "fingerprint")),
        cfg.seed,
        cache=cache,
        call_log=store.calls,
    )


async def rollout_stage(
    cfg: RunConfig,
    store: RunStore,
    tasks: list[Task],
    summary: RunSummary,
    no_cache: bool = False,
    show_progress: bool = True,
) -> None:
    """Sample `n` completions per task; write each trajectory the moment it is finished."""
    stage = store.stage(ROLLOUT)
    done = stage.done_keys("task_id#sample_index")
    todo = _work(cfg, tasks, done)
    summary.expected = len(tasks) * cfg.rollout.n
    summary.done = summary.expected - len(todo)
    backend = _instrumented(cfg, store, no_cache)
    agent = _agent(cfg, backend)
    if todo:
        await _prepare(backend.backend)
    fp, run_id = store.manifest["fingerprint"], store.manifest["run_id"]
    start = time.time()

    async def one(item: tuple[Task, int]) -> None:
        task, i = item
        key = f"{task.id}#{i}"
        try:
            traj = await _sample(agent, cfg, task, i, key, fp, run_id)
        except BackendError as e:
            summary.failed[e.reason] += 1
            store.failures.add(ROLLOUT, key, e.reason, str(e), attempts=e.attempts)
            return
        stage.writer().append(traj.to_json())
        summary.done += 1
        summary.made += 1

    try:
        with progress_bar("rollout", len(todo), enabled=show_progress) as advance:
            await bounded(todo, one, backend.max_concurrency, advance)
    finally:
        await backend.aclose()
        summary.model_calls = backend.calls
        summary.cache_hits = backend.cache_hits
        _write_rollout_stats(store, summary, time.time() - start)


async def _prepare(backend: object) -> None:
    """Fail fast on a dead endpoint; load an in-process model before the progress bar starts."""
    if hasattr(backend, "check_reachable"):
        await backend.check_reachable()
    if hasattr(backend, "load"):
        await asyncio.to_thread(backend.load)


def _agent(cfg: RunConfig, backend: Instrumented) -> Agent:
    bcfg = cfg.backends[cfg.rollout.backend]
    return Agent(
        backend=backend,
        tools=build_tools(cfg.rollout.tools),
        cfg=cfg.rollout.agent,
        params=cfg.rollout.params,
        text_protocol=getattr(bcfg, "tool_protocol", "native") == "text",
        few_shot=cfg.rollout.few_shot,
    )


async def _sample(
    agent: Agent, cfg: RunConfig, task: Task, i: int, key: str, fp: str, run_id: str
) -> Trajectory:
    agent = dataclasses.replace(agent, params=_params(cfg.rollout.params, i))
    if agent.cfg.first_tool_choice == "expected":
        first = expected_tool_choice(task)
        agent = dataclasses.replace(
            agent, cfg=agent.cfg.model_copy(update={"first_tool_choice": first})
        )
    r = await agent.run(_prompt(task, cfg.rollout.system_prompt), sample_index=i, key=key)
    return Trajectory(
        id=Trajectory.make_id(task.id, i, fp),
        task_id=task.id,
        sample_index=i,
        messages=r.messages,
        tools=agent.schemas(),
        final_answer=r.final_answer,
        stop_reason=r.stop_reason,
        agent=r.stats,
        usage=r.usage,
        latency_s=r.latency_s,
        model=r.model or agent.backend.model,
        backend=agent.backend.name,
        params=agent.params,
        provenance=task.provenance.model_copy(update={"run_id": run_id, "config_fingerprint": fp}),
        metadata=_trajectory_metadata(r, len(agent.few_shot)),
    )


def expected_tool_choice(task: Task) -> str | None:
    """The first step's tool_choice that forces what `task.expected_calls` say is right.

    >>> from agentmill.records import ExpectedCall
    >>> expected_tool_choice(Task.create("Hi?", expected_calls=[]))
    'none'
    >>> calls = [ExpectedCall(name="calculator"), ExpectedCall(name="get_weather", step=1)]
    >>> expected_tool_choice(Task.create("12 * 7?", expected_calls=calls))
    'calculator'
    >>> expected_tool_choice(Task.create("?", expected_calls=calls[:1] + [ExpectedCall(name="x")]))
    'required'
    >>> expected_tool_choice(Task.create("?")) is None
    True
    """
    if task.expected_calls is None:
        return None
    if not task.expected_calls:
        return "none"
    first = min(c.step for c in task.expected_calls)
    names = {c.name for c in task.expected_calls if c.step == first}
    return names.pop() if len(names) == 1 else "required"


def _trajectory_metadata(r: AgentResult, few_shot: int) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    if r.cached_steps:
        meta["cached_steps"] = r.cached_steps
    if few_shot:
        meta["few_shot_turns"] = few_shot  # sent to the model, left out of `messages`
    if r.injected is not None:  # AgentConfig.inject_tool_failure
        meta["injected_failure"] = r.injected
        meta["recovered"] = r.recovered()
    return meta


def _write_rollout_stats(store: RunStore, s: RunSummary, seconds: float) -> None:
    stats = {
        "expected": s.expected,
        "done": s.done,
        "made_this_session": s.made,
        "failed": dict(s.failed),
        "pending": s.pending,
        "model_calls": s.model_calls,
        "cache_hits": s.cache_hits,
        "seconds": round(seconds, 3),
    }
    store.stage(ROLLOUT).write_stats(stats)
    store.record_stage(ROLLOUT, **stats, complete=s.pending == 0 and not s.failed)


async def bounded(
    items: Iterable[Any],
    fn: Callable[[Any], Awaitable[None]],
    limit: int,
    advance: Callable[[], None] | None = None,
) -> None:
    """Run `fn` over `items` with at most `limit` in flight, pulling items lazily."""
    it = iter(items)
    running: set[asyncio.Task[None]] = set()
    try:
        while True:
            while len(running) < limit:
                item = next(it, None)
                if item is None:
                    break
                running.add(asyncio.ensure_future(fn(item)))
            if not running:
                return
            finished, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                f.result()
                if advance:
                    advance()
    finally:
        for f in running:
            f.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
