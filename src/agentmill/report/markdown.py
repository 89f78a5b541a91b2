"""The report as a Markdown quality report: the same sections as the HTML page, as tables.

Record text goes into fenced blocks whose fence is longer than any run of backticks inside,
so a trace cannot break out of its block.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from agentmill.report.examples import score

STAT_KEYS = ("count", "mean", "min", "p50", "p90", "max")
MAX_TEXT = 4_000


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _cell(x: Any) -> str:
    return _fmt(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    if not rows:
        return ["(none)", ""]
    out = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out + [""]


def _counts(title: str, counts: dict[str, int]) -> list[str]:
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [f"### {title}", "", *_table(["", "count"], [list(r) for r in rows])]


def _hist(title: str, dist: dict[str, Any]) -> list[str]:
    h = dist.get("histogram") or {"edges": [], "counts": []}
    e, c = h["edges"], h["counts"]
    rows = [[f"[{_fmt(e[i])}, {_fmt(e[i + 1])})", n] for i, n in enumerate(c)]
    stats = ", ".join(f"{k} {_fmt(dist[k])}" for k in STAT_KEYS if k in dist)
    return [f"### {title}", "", stats, "", *_table(["bin", "count"], rows)]


def _fence(text: str) -> list[str]:
    if len(text) > MAX_TEXT:
        text = text[:MAX_TEXT] + f"\n[... {len(text) - MAX_TEXT} more characters]"
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def render_markdown(
    analysis: dict[str, Any],
    examples: dict[str, list[dict[str, Any]]],
    tl: dict[str, Any] | None = None,
) -> str:
    """The whole report as Markdown text."""
    a = analysis
    rate = a.get("success_rate")
    lines = [f"# agentmill report: {a.get('source', '')}", "", "## Overview", ""]
    lines += _table(
        ["", "value"],
        [
            ["records", a.get("records", 0)],
            ["tasks", a.get("tasks", 0)],
            ["success rate", "not scored" if rate is None else f"{100 * rate:.1f}%"],
            ["tool calls", a.get("tool_calls", 0)],
            ["malformed call rate", f"{100 * a.get('malformed_call_rate', 0.0):.1f}%"],
        ],
    )
    lines += _funnel(a) + _distributions(a) + _tools(a)
    if tl:
        lines += _timeline(tl)
    lines += _examples(examples)
    return "\n".join(lines) + "\n"


def _funnel(a: dict[str, Any]) -> list[str]:
    out = ["## Pipeline funnel", ""]
    if a.get("funnel"):
        out += _table(["stage", "records"], [[r["stage"], r["records"]] for r in a["funnel"]])
    out += _counts("status", a.get("status", {})) + _counts(
        "stop reasons", a.get("stop_reasons", {})
    )
    if any(a.get("verdicts", {}).values()):
        out += _counts("judge verdicts", a["verdicts"])
    for stage, reasons in a.get("drops", {}).items():
        out += _counts(f"dropped at {stage}", reasons)
    return out


def _distributions(a: dict[str, Any]) -> list[str]:
    out = ["## Rewards, steps and lengths", ""]
    for name, d in a.get("rewards", {}).items():
        out += _hist(f"reward {name}", d)
    out += _hist("steps", a.get("steps", {}))
    for kind, d in a.get("tokens", {}).items():
        out += _hist(f"{kind} tokens", d)
    return out


def _tools(a: dict[str, Any]) -> list[str]:
    rows = [
        [n, t.get("calls", 0), t.get("errors", 0), t.get("error_rate", 0.0)]
        for n, t in a.get("tools", {}).items()
    ]
    return ["## Tool usage", "", *_table(["tool", "calls", "errors", "error rate"], rows)]


def _timeline(tl: dict[str, Any]) -> list[str]:
    out = ["## The run over time", ""]
    out += _table(
        ["", "value"],
        [
            ["model calls", tl.get("calls", 0)],
            ["retries", tl.get("retries", 0)],
            ["cache hits", tl.get("cache_hits", 0)],
            ["wall time (s)", tl.get("wall_s", 0.0)],
        ],
    )
    fields = ["trajectories", "calls", "retries", "cache_hits", "failures"]
    rows = [[r["minute"], *(r[f] for f in fields)] for r in tl.get("per_minute", [])]
    out += _table(["minute", *fields], rows)
    return out + _counts("failures by reason", tl.get("failures_by_reason", {}))


def _examples(examples: dict[str, list[dict[str, Any]]]) -> list[str]:
    out = ["## Examples", ""]
    if "sample" in examples:
        out += ["No record carries a reward: a seeded sample.", ""]
    for group, recs in examples.items():
        for r in recs:
            out += [f"### {group}: {_cell(r.get('id', '?'))} (score {_fmt(score(r))})", ""]
            out += _trajectory(r)
    return out


def _trajectory(r: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for m in r.get("messages") or []:
        role = "observation" if m.get("role") == "tool" else str(m.get("role", "?"))
        content = m.get("content")
        if isinstance(content, list):
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        out += [f"**{_cell(role)}**", "", *_fence(content or ""), ""]
        for call in m.get("tool_calls") or []:
            fn = call.get("function", {})
            args = fn.get("arguments")
            shown = fn.get("raw_arguments") if args is None else orjson.dumps(args).decode()
            out += [f"tool call `{_cell(fn.get('name', '?'))}`", "", *_fence(shown or ""), ""]
    out += _table(["reward", "value"], [[k, v] for k, v in (r.get("rewards") or {}).items()])
    verdicts = [
        [v.get("judge"), v.get("verdict"), v.get("reason")] for v in r.get("verdicts") or []
    ]
    if verdicts:
        out += _table(["judge", "verdict", "reason"], verdicts)
    return out
