"""`agentmill analyze FILE_OR_RUN` and `agentmill compare A B`: figures as rich tables or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from agentmill.report.analyze import analyze
from agentmill.report.compare import compare


def analyze_cmd(
    path: Path = typer.Argument(..., help="A JSONL file of trajectories, or a run folder."),
    stage: str | None = typer.Option(
        None, "--stage", help="Analyze this stage's output of a run folder (default: score)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
) -> None:
    """Counts, success, rewards, steps, tools, tokens, stop and drop reasons, by source/model."""
    an = analyze(path, stage)
    if as_json:
        typer.echo(orjson.dumps(an, option=orjson.OPT_INDENT_2).decode())
        return
    con = Console(emoji=False)
    for table in analysis_tables(an):
        if table.row_count:
            con.print(table)


def analysis_tables(an: dict[str, Any]) -> list[Table]:
    """The analysis as rich tables: overview, distributions, rewards, tools, drops, breakdowns."""
    overview = Table("figure", "value", title=an["source"])
    for key in ("records", "tasks", "tool_calls"):
        overview.add_row(key, str(an[key]))
    overview.add_row("success_rate", _pct(an["success_rate"]))
    overview.add_row("malformed_call_rate", _pct(an["malformed_call_rate"]))
    for key in ("status", "stop_reasons", "verdicts"):
        overview.add_row(key, "  ".join(f"{k} {n}" for k, n in an[key].items()))
    dists = Table("distribution", "count", "mean", "p50", "p90", "max")
    for name, d in [("steps", an["steps"])] + [(f"{k} tokens", v) for k, v in an["tokens"].items()]:
        dists.add_row(name, *(_num(d[f]) for f in ("count", "mean", "p50", "p90", "max")))
    rewards = Table("reward", "count", "mean", "min", "max")
    for name, d in an["rewards"].items():
        rewards.add_row(name, *(_num(d[f]) for f in ("count", "mean", "min", "max")))
    tools = Table("tool", "calls", "errors", "error rate")
    for name, t in an["tools"].items():
        tools.add_row(name, str(t["calls"]), str(t["errors"]), _pct(t["error_rate"]))
    funnel = Table("funnel", "records")
    for row in an["funnel"]:
        funnel.add_row(row["stage"], str(row["records"]))
    drops = Table("stage", "dropped because", "records")
    for stage, reasons in an["drops"].items():
        for why, n in reasons.items():
            drops.add_row(stage, why, str(n))
    return [
        overview,
        dists,
        rewards,
        tools,
        funnel,
        drops,
        _groups(an, "by_source"),
        _groups(an, "by_model"),
    ]


def _groups(an: dict[str, Any], key: str) -> Table:
    table = Table(key.removeprefix("by_"), "records", "success rate")
    for name, g in an[key].items():
        table.add_row(name, str(g["records"]), _pct(g["success_rate"]))
    return table


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{rate * 100:.1f}%"


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"


def compare_cmd(
    a: Path = typer.Argument(..., help="First trajectories file or run folder."),
    b: Path = typer.Argument(..., help="Second trajectories file or run folder."),
    label1: str | None = typer.Option(None, "--label1", help="Name of A (default: its name)."),
    label2: str | None = typer.Option(None, "--label2", help="Name of B (default: its name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """The figures of `analyze` for A and B side by side, with B - A (rates in points)."""
    cmp = compare(a, b, label1, label2)
    if as_json:
        typer.echo(orjson.dumps(cmp, option=orjson.OPT_INDENT_2).decode())
        return
    first, second = cmp["labels"]
    table = Table("figure", first, second, f"{second} - {first}")
    for row in cmp["rows"]:
        table.add_row(row["figure"], *_cells(row))
    Console(emoji=False).print(table)


def _cells(row: dict[str, Any]) -> list[str]:
    if row["unit"] == "pp":
        diff = "-" if row["diff"] is None else f"{row['diff']:+.1f} pp"
        return [_pct(row["a"]), _pct(row["b"]), diff]
    diff = "-" if row["diff"] is None else ("+" if row["diff"] > 0 else "") + _num(row["diff"])
    return [_num(row["a"]), _num(row["b"]), diff]
