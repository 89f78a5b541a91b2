"""What both synthesizers share: backends, bounded concurrency, dedup, stats, output files.

A synthesizer is anything with `async candidate(index) -> Outcome`: it asks the generator for
candidate `index`, runs its checks, and returns the task it keeps or the reason it drops.
`run_synth` runs `n` of them concurrently, catches a failed model call at the candidate
boundary (drop reason `backend_<reason>`, retried on the next run: failures are never cached),
drops exact and near-duplicate questions, and `write_outputs` writes the kept tasks, the
dropped candidates with their reasons and the counts.

>>> o = [Outcome(0, task=Task.create("Hi")), Outcome(1, reason="unparseable")]
>>> stats = synth_stats(o, seconds=30.0)
>>> stats["kept"], stats["dropped"], stats["candidates_per_minute"]
(1, {'unparseable': 1}, 4.0)
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import orjson

from agentmill.backends import BackendError, build_backend
from agentmill.backends.instrumented import Instrumented
from agentmill.config import config_view
from agentmill.records import (
    FunctionCall,
    Message,
    SamplingParams,
    Task,
    ToolCall,
    Trajectory,
    content_hash,
)
from agentmill.store import write_atomic
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.parse import extract_json


@dataclass
class Outcome:
    """One candidate: the task kept, or the reason it was dropped (with what was generated)."""

    index: int
    task: Task | None = None
    reason: str | None = None
    detail: str = ""
    candidate: dict[str, Any] = field(default_factory=dict)
    notes: Counter[str] = field(default_factory=Counter)  # e.g. evolution rounds rejected

    @property
    def kept(self) -> bool:
        return self.task is not None and self.reason is None


def drop(index: int, reason: str, detail: str = "", **candidate: Any) -> Outcome:
    return Outcome(index, reason=reason, detail=detail, candidate=candidate)


def unparseable(index: int, text: str, **candidate: Any) -> Outcome:
    """The drop for a reply with no JSON object; says so when the reply was cut."""
    cut = text.endswith("]") and "\n[cut at max_tokens=" in text
    detail = "no JSON object in the reply" + (" (cut at max_tokens: raise it)" if cut else "")
    return drop(index, "unparseable", detail, raw=text[:2000], **candidate)


class Synthesizer(Protocol):
    async def candidate(self, index: int) -> Outcome: ...


@dataclass
class Models:
    """The instrumented generator, solver and judge (the same object when names repeat)."""

    generator: Instrumented
    solver: Instrumented | None = None
    judge: Instrumented | None = None

    def all(self) -> list[Instrumented]:
        seen: dict[int, Instrumented] = {}
        for m in (self.generator, self.solver, self.judge):
            if m is not None:
                seen[id(m)] = m
        return list(seen.values())

    async def prepare(self) -> None:
        from agentmill.pipeline import _prepare

        for m in self.all():
            await _prepare(m.backend)

    async def aclose(self) -> None:
        for m in self.all():
            await m.aclose()

    @property
    def calls(self) -> int:
        return sum(m.calls for m in self.all())

    @property
    def cache_hits(self) -> int:
        return sum(m.cache_hits for m in self.all())


def build_models(src: SynthSourceConfig, no_cache: bool = False) -> Models:
    """Backends named by the source, each wrapped with the response cache and, inside a run,
    the run's call log."""
    from agentmill.cache import ResponseCache
    from agentmill.pipeline import default_cache_path

    ctx = src._context
    cache = None
    if ctx.get("cache", True) and not no_cache:
        cache = ResponseCache(ctx.get("cache_path") or default_cache_path())
    built: dict[str, Instrumented] = {}
    for _, name in src.backend_names():
        if name not in built:
            bcfg = ctx["backends"][name]
            fp = content_hash(config_view(bcfg, "fingerprint"))
            built[name] = Instrumented(
                build_backend(name, bcfg),
                fp,
                ctx["seed"],
                cache=cache,
                call_log=ctx.get("call_log"),
            )
    solver = built[src.solver or src.generator] if src.kind == "docs" else None
    judge = built[src.judge] if src.judge else None
    return Models(built[src.generator], solver, judge)


async def ask(
    model: Instrumented, system: str, user: str, params: SamplingParams, key: str, sample: int = 0
) -> str:
    """One chat call; the reply's text (a failed call raises `BackendError`)."""
    messages = [Message(role="system", content=system), Message(role="user", content=user)]
    c = await model.complete(messages, None, params, sample_index=sample, work_key=key)
    return c.text


SUBMIT = "submit"


def structured(model: Instrumented, src: SynthSourceConfig) -> bool:
    """Whether the generator gets a forced `submit` tool whose arguments are the candidate:
    local backends (constrained decoding) and native-protocol servers; never with `never`."""
    if src.structured == "never":
        return False
    bcfg = src._context["backends"].get(model.name)
    kind = getattr(bcfg, "type", "")
    return kind == "local" or (kind == "openai" and bcfg.tool_protocol == "native")


async def generate(
    model: Instrumented,
    src: SynthSourceConfig,
    prompt: tuple[str, str],
    schema: dict[str, Any],
    key: str,
    sample: int,
    shot: tuple[str, dict[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, str]:
    """The generator's candidate object (None when nothing parses) and its raw reply (with a
    note when it was cut at `max_tokens`, the usual cause of unparseable JSON). With
    `structured`, the object is the arguments of a forced `submit` call (valid by
    construction); otherwise, or when the reply has no call, JSON read from the text.
    `shot` is one worked exchange (a prompt and its reply object) sent before the prompt:
    small models follow a worked example far better than instructions."""
    forced = structured(model, src)
    messages = [Message(role="system", content=prompt[0])]
    if shot is not None:
        messages += worked_exchange(*shot, forced)
    messages.append(Message(role="user", content=prompt[1]))
    tools, params = None, src.params
    if forced:
        fn = {"name": SUBMIT, "description": "Submit the test case.", "parameters": schema}
        tools = [{"type": "function", "function": fn}]
        params = params.model_copy(update={"tool_choice": SUBMIT})
    c = await model.complete(messages, tools, params, sample_index=sample, work_key=key)
    for call in c.tool_calls:
        if call.function.name == SUBMIT and call.function.arguments is not None:
            return call.function.arguments, orjson.dumps(call.function.arguments).decode()
    obj = extract_json(c.text)
    if obj is not None and obj.get("name") == SUBMIT and isinstance(obj.get("arguments"), dict):
        obj = obj["arguments"]  # a text-protocol call written out
    if obj is None and c.finish_reason == "length":
        return None, f"{c.text}\n[cut at max_tokens={params.max_tokens}]"
    return obj, c.text


def worked_exchange(user: str, reply: dict[str, Any], forced: bool) -> list[Message]:
    """The example turns: the reply as a `submit` call (forced) or as JSON text."""
    if not forced:
        text = orjson.dumps(reply).decode()
        return [Message(role="user", content=user), Message(role="assistant", content=text)]
    call = ToolCall(id="call_0", function=FunctionCall(name=SUBMIT, arguments=reply))
    return [
        Message(role="user", content=user),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="call_0", name=SUBMIT, content="Saved."),
    ]


async def run_synth(
    src: SynthSourceConfig, synth: Synthesizer, models: Models, show_progress: bool = False
) -> list[Outcome]:
    """`src.n` candidates, at most `max_concurrency` at once, then dedup of the kept ones."""
    from agentmill.pipeline import bounded
    from agentmill.progress import progress_bar

    outcomes: list[Outcome] = []

    async def one(index: int) -> None:
        try:
            outcomes.append(await synth.candidate(index))
        except BackendError as e:  # the candidate boundary: recorded, retried next run
            outcomes.append(drop(index, f"backend_{e.reason}", str(e)[:300]))

    await models.prepare()
    with progress_bar("synth", src.n, enabled=show_progress) as advance:
        await bounded(range(src.n), one, src.max_concurrency, advance)
    outcomes.sort(key=lambda o: o.index)
    if src.dedup:
        dedup_outcomes(outcomes, src.dedup_threshold)
    return outcomes


def dedup_outcomes(outcomes: list[Outcome], threshold: float) -> None:
    """Mark kept tasks whose question duplicates an earlier kept one (exact, then near)."""
    from agentmill.curation.dedup import dedup
    from agentmill.curation.dedup_config import DedupConfig

    kept = [o for o in outcomes if o.kept]
    as_records = [
        Trajectory(id=str(o.index), task_id=o.task.id, messages=o.task.prompt)  # type: ignore[union-attr]
        for o in kept
    ]
    result = dedup(as_records, DedupConfig(field="query", threshold=threshold))
    by_index = {str(o.index): o for o in kept}
    for record, why, kept_id in result.dropped:
        o = by_index[record.id]
        o.reason, o.detail = "duplicate", f"{why} of candidate {kept_id}"
        o.candidate = {"question": o.task.query}  # type: ignore[union-attr]


def synth_stats(outcomes: list[Outcome], seconds: float, models: Models | None = None) -> dict:
    """Candidates, kept, drops by reason, notes, speed and model calls."""
    dropped = Counter(o.reason for o in outcomes if not o.kept)
    notes: Counter[str] = Counter()
    for o in outcomes:
        notes.update(o.notes)
    kept = sum(o.kept for o in outcomes)
    stats: dict[str, Any] = {
        "candidates": len(outcomes),
        "kept": kept,
        "keep_rate": round(kept / len(outcomes), 4) if outcomes else 0.0,
        "dropped": dict(dropped.most_common()),
        "notes": dict(notes),
        "seconds": round(seconds, 3),
        "candidates_per_minute": round(60 * len(outcomes) / seconds, 2) if seconds else None,
    }
    if models is not None:
        stats |= {"model_calls": models.calls, "cache_hits": models.cache_hits}
    return stats


def task_row(task: Task) -> dict[str, Any]:
    """A task-file line the `file` source reads back (metadata flattened to columns)."""
    row: dict[str, Any] = {"id": task.id, "prompt": [m.to_dict() for m in task.prompt]}
    if task.ground_truth is not None:
        row["ground_truth"] = task.ground_truth
    if task.tools:
        row["tools"] = task.tools
    if task.expected_calls is not None:
        row["expected_calls"] = [c.to_dict() for c in task.expected_calls]
    return row | task.metadata


def side_paths(out: Path) -> tuple[Path, Path]:
    """Where the dropped candidates and the stats of `out` go."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.dropped.jsonl"), out.with_name(f"{stem}.stats.json")


def write_outputs(outcomes: list[Outcome], out: Path, stats: dict[str, Any]) -> None:
    """Kept tasks to `out`; `<stem>.dropped.jsonl` ({index, reason, detail, candidate}) and
    `<stem>.stats.json` beside it. Each file is replaced whole (atomically)."""
    dropped_path, stats_path = side_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = [orjson.dumps(task_row(o.task)) for o in outcomes if o.kept]  # type: ignore[arg-type]
    gone = [orjson.dumps(dropped_row(o)) for o in outcomes if not o.kept]
    write_atomic(out, b"".join(line + b"\n" for line in kept))
    write_atomic(dropped_path, b"".join(line + b"\n" for line in gone))
    write_atomic(stats_path, orjson.dumps(stats, option=orjson.OPT_INDENT_2))


def dropped_row(o: Outcome) -> dict[str, Any]:
    return {"index": o.index, "reason": o.reason, "detail": o.detail, "candidate": o.candidate}


def synthesize(
    src: SynthSourceConfig, no_cache: bool = False, show_progress: bool = False
) -> tuple[list[Outcome], dict[str, Any]]:
    """Build the models and the synthesizer of `src`, run it, return outcomes and stats."""
    return asyncio.run(_synthesize(src, no_cache, show_progress))


async def _synthesize(
    src: SynthSourceConfig, no_cache: bool, show_progress: bool
) -> tuple[list[Outcome], dict[str, Any]]:
    models = build_models(src, no_cache)
    start = time.monotonic()
    try:
        synth = make_synthesizer(src, models)
        outcomes = await run_synth(src, synth, models, show_progress)
    finally:
        await models.aclose()
    return outcomes, synth_stats(outcomes, time.monotonic() - start, models)


def make_synthesizer(src: SynthSourceConfig, models: Models) -> Synthesizer:
    if src.kind == "tools":
        from agentmill.synth.tools import ToolSynth

        return ToolSynth(src, models)
    from agentmill.synth.docs import DocSynth

    return DocSynth(src, models)
