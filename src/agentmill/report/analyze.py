"""`agentmill analyze`: the figures of a trajectories file or a run folder, as one JSON-able dict.

Read from the files alone (a run still going, or killed, can be analyzed), in one streaming
pass. A run folder is read at every trajectory it made (`score/records.jsonl`, else
`rollout/records.jsonl`), so rewards and success cover what the later stages dropped too; the
manifest's funnel and each `<stage>/stats.json` say what every later stage kept and dropped, by
reason. `--stage NAME` reads another stage's output instead (`--stage filter`: the kept data).

    agentmill analyze runs/demo                  # rich tables
    agentmill analyze runs/demo --stage filter   # the data that passed the filter
    agentmill analyze out.jsonl --json           # the dict below

Definitions (the tests work them out by hand):

- a record is *scored* when it has at least one reward; `success_rate` is the fraction of
  scored records whose rewards are all >= 1.0 (None when none is scored);
- steps are `agent.steps`, or the number of assistant messages when the record has no `agent`;
- a tool call is *malformed* when its arguments did not parse (`arguments` null); it is an
  *error* when its observation (the `tool` message with its id) starts with "Error" (what the
  agent loop writes for malformed, unknown, raising and timed-out calls);
- percentiles are nearest-rank: p-th of n sorted values is value number ceil(p/100 * n);
- histograms: integer values spanning fewer than 10 units get one bin per integer (edges lo ..
  hi + 1); other values 10 equal bins over [lo, hi], the last one closed; reward histograms
  span at least [0, 1]. Counts always sum to the number of values.

>>> d = dist([1, 2, 2, 7])
>>> d["count"], d["mean"], d["p50"], d["p90"], d["max"]
(4, 3.0, 2, 7, 7)
>>> d["histogram"]["counts"]
[1, 2, 0, 0, 0, 0, 1]
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.fileops import STAGE_ORDER, resolve_input
from agentmill.report.examples import ExamplePicker
from agentmill.store import MANIFEST, RunStore, iter_jsonl
from agentmill.summary import funnel_rows

BINS = 10
VERDICTS = ("GOOD", "BAD", "ERROR")
# In pipeline order: how the drops table reads top to bottom.
DROP_STAGES = (
    "source",
    "rollout",
    "score",
    "filter",
    "judge",
    "dedup",
    "decontaminate",
    "balance",
    "export",
)
# What a run folder is analyzed at by default: all its trajectories, with their rewards.
RUN_DEFAULT_STAGES = ("score", "rollout")
# The stats.json keys that hold {reason: n} of records lost at that stage.
DROP_KEYS = ("bad_records", "failed", "dropped", "skipped")


def analyze(path: Path, stage: str | None = None) -> dict[str, Any]:
    """All figures of a trajectories JSONL file or a run folder (see the module docstring)."""
    return scan(path, stage)[0]


def scan(
    path: Path, stage: str | None = None, n_examples: int = 0, seed: int = 0
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The analysis and the example trajectories a report shows, in one streaming pass.

    Memory holds the per-record figures (a few numbers each) and at most 3 * `n_examples`
    records, never the whole file.
    """
    src = stage_input(path, stage)
    acc = Figures()
    picker = ExamplePicker(n_examples, seed)
    other = 0
    for n, line in iter_jsonl(src):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise UserError(
                f"{src}:{n} is not valid JSON; pass a JSONL file of agentmill trajectories"
            ) from None
        if not (isinstance(rec, dict) and "messages" in rec and "task_id" in rec):
            other += 1
            continue
        acc.add(rec)
        picker.add(rec)
    if other and not acc.records:
        raise UserError(
            f"{src} holds no trajectories (tasks?); pass a trajectories file or a run folder"
        )
    out = {"source": str(src)} | acc.result()
    out["not_trajectories"] = other
    run_dir = path if path.is_dir() else None
    out["drops"] = drops(run_dir) if run_dir else {}
    out["funnel"] = run_funnel(run_dir) if run_dir else []
    return out, picker.result()


def stage_input(path: Path, stage: str | None) -> Path:
    """The records a figure is computed on: the file, or a run folder's (latest) stage output."""
    if stage is None:
        if path.is_dir():  # every trajectory the run made, scored where scoring ran
            for name in RUN_DEFAULT_STAGES:
                if (path / name / "records.jsonl").exists():
                    return path / name / "records.jsonl"
        return resolve_input(path)
    if not path.is_dir():
        raise UserError(f"--stage needs a run folder; {path} is a file")
    src = path / stage / "records.jsonl"
    if not src.exists():
        have = [s for s in STAGE_ORDER if (path / s / "records.jsonl").exists()]
        have_text = ", ".join(have) or "none"
        raise UserError(f"{path} has no {stage!r} stage output; stages with records: {have_text}")
    return src


class Figures:
    """Accumulates the figures of trajectories one record at a time."""

    def __init__(self) -> None:
        self.records = 0
        self.tasks: set[str] = set()
        self.scored = self.succeeded = 0
        self.status: Counter[str] = Counter()
        self.stop_reasons: Counter[str] = Counter()
        self.rewards: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self.prompt: list[int] = []
        self.completion: list[int] = []
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.malformed = 0
        self.groups: dict[str, dict[str, list[int]]] = {"by_source": {}, "by_model": {}}
        self.verdicts: Counter[str] = Counter()

    def add(self, t: dict[str, Any]) -> None:
        self.records += 1
        self.tasks.add(t["task_id"])
        rewards = t.get("rewards") or {}
        ok = is_success(t)
        self.scored += bool(rewards)
        self.succeeded += ok
        self.status[t.get("status", "ok")] += 1
        self.stop_reasons[t.get("stop_reason", "stop")] += 1
        for name, value in rewards.items():
            self.rewards.setdefault(name, []).append(float(value))
        self.steps.append(steps(t))
        usage = t.get("usage") or {}
        self.prompt.append(int(usage.get("prompt_tokens") or 0))
        self.completion.append(int(usage.get("completion_tokens") or 0))
        self._tools(t)
        for key, value in (
            ("by_source", (t.get("provenance") or {}).get("source")),
            ("by_model", t.get("model")),
        ):  # [records, scored, succeeded]
            g = self.groups[key].setdefault(value or "unknown", [0, 0, 0])
            g[0], g[1], g[2] = g[0] + 1, g[1] + bool(rewards), g[2] + ok
        if t.get("verdicts"):
            self.verdicts[t["verdicts"][-1].get("verdict")] += 1

    def _tools(self, t: dict[str, Any]) -> None:
        calls, observed = _calls_and_observations(t)
        for c in calls:
            fn = c.get("function") or {}
            name = fn.get("name") or "?"
            self.calls[name] += 1
            self.malformed += fn.get("arguments") is None
            self.errors[name] += observed.get(c.get("id"), "").lstrip().lower().startswith("error")

    def result(self) -> dict[str, Any]:
        total_calls = sum(self.calls.values())
        return {
            "records": self.records,
            "tasks": len(self.tasks),
            "success_rate": _rate(self.succeeded, self.scored),
            "status": {"ok": self.status["ok"], "failed": self.status["failed"]},
            "stop_reasons": dict(self.stop_reasons.most_common()),
            "rewards": {name: reward_dist(v) for name, v in sorted(self.rewards.items())},
            "steps": dist(self.steps),
            "tokens": {
                "prompt": dist(self.prompt),
                "completion": dist(self.completion),
                "total": dist([p + c for p, c in zip(self.prompt, self.completion, strict=True)]),
            },
            "tools": {
                name: {"calls": n, "errors": self.errors[name], "error_rate": self.errors[name] / n}
                for name, n in sorted(self.calls.items())
            },
            "tool_calls": total_calls,
            "malformed_call_rate": self.malformed / total_calls if total_calls else 0.0,
            **{
                key: {
                    name: {"records": n, "success_rate": _rate(ok, scored)}
                    for name, (n, scored, ok) in sorted(groups.items())
                }
                for key, groups in self.groups.items()
            },
            "verdicts": {v: self.verdicts[v] for v in VERDICTS},
        }


def _rate(n: int, d: int) -> float | None:
    return n / d if d else None


def is_success(t: dict[str, Any]) -> bool:
    """Scored, and every reward >= 1.0 (the funnel's `correct`)."""
    rewards = t.get("rewards") or {}
    return bool(rewards) and min(rewards.values()) >= 1.0


def steps(t: dict[str, Any]) -> int:
    """The agent's steps, or the assistant messages of a record without agent stats."""
    agent = t.get("agent")
    if agent is not None:
        return int(agent.get("steps", 0))
    return sum(m.get("role") == "assistant" for m in t["messages"])


# ---------------------------------------------------------------- distributions
def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: value number ceil(p/100 * n) of the sorted values."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def histogram(values: list[float], lo: float | None = None, hi: float | None = None) -> dict:
    """Edges and counts; `lo`/`hi` widen the range (never narrow it). Counts sum to len(values).

    >>> histogram([0.0, 0.5, 1.0], lo=0.0, hi=1.0)["counts"]
    [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    >>> histogram([3, 3])
    {'edges': [3, 4], 'counts': [2]}
    """
    if not values:
        return {"edges": [], "counts": []}
    lo = min(values) if lo is None else min(lo, min(values))
    hi = max(values) if hi is None else max(hi, max(values))
    if all(isinstance(v, int) for v in values) and hi - lo < BINS:
        edges = list(range(int(lo), int(hi) + 2))
        counts = [0] * (len(edges) - 1)
        for v in values:
            counts[int(v - lo)] += 1
        return {"edges": edges, "counts": counts}
    if hi == lo:
        return {"edges": [lo, hi], "counts": [len(values)]}
    width = (hi - lo) / BINS
    counts = [0] * BINS
    for v in values:  # scaled before dividing: 0.3 lands in bin 3, not 2.999.. -> 2
        counts[min(int((v - lo) * BINS / (hi - lo)), BINS - 1)] += 1
    return {"edges": [round(lo + i * width, 6) for i in range(BINS + 1)], "counts": counts}


def dist(values: list[float]) -> dict[str, Any]:
    """count, mean, p50, p90, max and a histogram (figures None when there are no values)."""
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "max": None} | {
            "histogram": histogram([])
        }
    s = sorted(values)
    return {
        "count": len(s),
        "mean": round(sum(s) / len(s), 6),
        "p50": percentile(s, 50),
        "p90": percentile(s, 90),
        "max": s[-1],
        "histogram": histogram(s),
    }


def reward_dist(values: list[float]) -> dict[str, Any]:
    """count, mean, min, max of one reward, and a histogram over at least [0, 1]."""
    return {
        "count": len(values),
        "mean": round(sum(values) / len(values), 6),
        "min": min(values),
        "max": max(values),
        "histogram": histogram(values, lo=0.0, hi=1.0),
    }


# ---------------------------------------------------------------- tools
def _calls_and_observations(t: dict[str, Any]) -> tuple[list[dict], dict[str, str]]:
    calls, observed = [], {}
    for m in t["messages"]:
        calls += m.get("tool_calls") or []
        if m.get("role") == "tool" and m.get("tool_call_id"):
            observed[m["tool_call_id"]] = _text(m.get("content"))
    return calls, observed


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def drops(run_dir: Path) -> dict[str, dict[str, int]]:
    """Records lost per stage by reason, from each `<stage>/stats.json`; stages that have no
    stats file fall back to the manifest's funnel. Stages that lost nothing are left out."""
    out: dict[str, dict[str, int]] = {}
    for stage in DROP_STAGES:
        path = run_dir / stage / "stats.json"
        if path.exists():
            try:
                reasons = _reasons(orjson.loads(path.read_bytes()))
            except orjson.JSONDecodeError:  # written atomically; a hand-edited file is skipped
                reasons = {}
        else:
            reasons = _funnel_reasons(run_dir, stage)
        if reasons:
            out[stage] = reasons
    return out


def run_funnel(run_dir: Path) -> list[dict[str, Any]]:
    """The run's funnel as [{stage, records}] rows, from the manifest (empty before the later
    stages have run)."""
    if not (run_dir / MANIFEST).exists():
        return []
    funnel = RunStore.read_manifest(run_dir).get("stages", {}).get("funnel")
    return (
        [{"stage": label, "records": n} for label, n in funnel_rows(funnel or {})] if funnel else []
    )


def _reasons(stats: dict[str, Any]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for key in DROP_KEYS:
        value = stats.get(key)
        if isinstance(value, dict):
            out.update({k: n for k, n in value.items() if isinstance(n, int) and n})
    return dict(out)


def _funnel_reasons(run_dir: Path, stage: str) -> dict[str, int]:
    if not (run_dir / MANIFEST).exists():
        return {}
    funnel = RunStore.read_manifest(run_dir).get("stages", {}).get("funnel") or {}
    key = {"score": "score_failed", "filter": "dropped", "export": "export_skipped"}.get(stage)
    if key is not None:
        return {k: n for k, n in (funnel.get(key) or {}).items() if n}
    return _reasons((funnel.get("curation") or {}).get(stage) or {})
