"""`agentmill compare A B`: the figures of `analyze` for two inputs side by side, with differences.

    agentmill compare runs/base runs/tuned --label1 base --label2 tuned

Each row is one figure: its value in A, in B, and B - A. Counts and other figures differ in
absolute units; rates (`success_rate`, `malformed_call_rate`, tool error rates) in percentage
points. A count one side lacks is 0 there; any other figure is None, and its difference None.

>>> a, b = {"success_rate": 0.5, "records": 4}, {"success_rate": 0.75, "records": 6}
>>> rows = compare_analyses(a, b)
>>> [(r["figure"], r["diff"], r["unit"]) for r in rows]
[('records', 2, 'count'), ('success_rate', 25.0, 'pp')]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentmill.report.analyze import analyze

DIST_FIGURES = ("count", "mean", "p50", "p90", "max")
REWARD_FIGURES = ("count", "mean", "min", "max")


def compare(
    a: Path, b: Path, label1: str | None = None, label2: str | None = None
) -> dict[str, Any]:
    """Analyze both inputs; labels default to their file (or folder) names."""
    if label1 is None and label2 is None and a.name == b.name:
        label1, label2 = str(a), str(b)  # two records.jsonl: the paths tell them apart
    first, second = analyze(a), analyze(b)
    return {
        "labels": [label1 or a.name, label2 or b.name],
        "sources": [first["source"], second["source"]],
        "rows": compare_analyses(first, second),
    }


def compare_analyses(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of either analysis: figure, a, b, diff (b - a), unit."""
    fa, fb = flatten(a), flatten(b)
    names = list(fa) + [k for k in fb if k not in fa]
    return [_row(name, fa.get(name), fb.get(name)) for name in names]


def _row(name: str, a: float | None, b: float | None) -> dict[str, Any]:
    unit = "pp" if name.endswith("rate") else ("count" if _is_count(name) else "value")
    if unit == "count":  # a reason or tool one side never saw happened 0 times there
        a, b = a or 0, b or 0
    diff = None
    if a is not None and b is not None:
        diff = round((b - a) * 100, 6) if unit == "pp" else b - a
        diff = round(diff, 6) if isinstance(diff, float) else diff
    return {"figure": name, "a": a, "b": b, "diff": diff, "unit": unit}


def _is_count(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return last in (
        "count",
        "calls",
        "errors",
        "records",
        "tasks",
        "tool_calls",
    ) or name.startswith(("status.", "stop_reasons.", "verdicts.", "drops."))


def flatten(an: dict[str, Any]) -> dict[str, float | None]:
    """The analysis as `dotted.name -> number`, in a fixed reading order."""
    out: dict[str, float | None] = {}
    for key in ("records", "tasks", "success_rate", "tool_calls", "malformed_call_rate"):
        if key in an:
            out[key] = an[key]
    for group in ("status", "stop_reasons", "verdicts"):
        out |= {f"{group}.{k}": v for k, v in (an.get(group) or {}).items()}
    for name, d in (an.get("rewards") or {}).items():
        out |= {f"rewards.{name}.{f}": d[f] for f in REWARD_FIGURES}
    if "steps" in an:
        out |= {f"steps.{f}": an["steps"][f] for f in DIST_FIGURES}
    for kind, d in (an.get("tokens") or {}).items():
        out |= {f"tokens.{kind}.{f}": d[f] for f in DIST_FIGURES}
    for name, t in (an.get("tools") or {}).items():
        out |= {f"tools.{name}.{f}": t[f] for f in ("calls", "errors", "error_rate")}
    for stage, reasons in (an.get("drops") or {}).items():
        out |= {f"drops.{stage}.{why}": n for why, n in reasons.items()}
    for group in ("by_source", "by_model"):
        for name, g in (an.get(group) or {}).items():
            out |= {f"{group}.{name}.records": g["records"]}
            out |= {f"{group}.{name}.success_rate": g["success_rate"]}
    return out
