"""`agentmill score`, `agentmill filter`, `agentmill export`: one stage on a file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agentmill.curation.configs import FilterConfig
from agentmill.fileops import FileResult, export_file, filter_file, score_file


def _report(r: FileResult, verb: str) -> None:
    con = Console()
    con.print(f"read {r.read}   {verb} {r.written}   -> {r.out}")
    for reason, n in r.dropped.most_common():
        con.print(f"  dropped {reason}: {n}")
    for reason, n in r.bad.most_common():
        con.print(f"  [yellow]skipped bad record[/] {reason}: {n}")


def score_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl."),
    reward: list[str] = typer.Option(..., "--reward", "-r", help="A reward type (repeatable)."),
    tasks: Path | None = typer.Option(
        None, "--tasks", help="Tasks with ground truths (default: the run's)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Score trajectories with verifiable rewards.

    Rewards: math, code, tool_call, format, exact, contains, regex."""
    _report(score_file(src, out, reward, tasks, strict), "scored")


def filter_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output .jsonl (drops go to <out>.dropped.jsonl)."
    ),
    min_reward: float | None = typer.Option(
        None, "--min-reward", help="Every reward must be >= this."
    ),
    reward: str | None = typer.Option(
        None, "--reward", help="Apply --min-reward to this reward only."
    ),
    successful_only: bool = typer.Option(
        False, "--successful-only", help="Keep only answered trajectories."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Drop longer trajectories."
    ),
    valid_tool_calls_only: bool = typer.Option(
        False, "--valid-tool-calls-only", help="Drop trajectories with malformed or unknown calls."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Keep the trajectories that pass; count every drop by reason."""
    cfg = FilterConfig(
        min_reward=min_reward,
        reward=reward,
        successful_only=successful_only,
        max_steps=max_steps,
        valid_tool_calls_only=valid_tool_calls_only,
    )
    _report(filter_file(src, out, cfg, strict), "kept")


def export_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    fmt: str = typer.Option(
        "trl-sft", "--format", "-f", help="trl-sft, trl-dpo, sharegpt, react or trajectory."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output file."),
    include_reasoning: bool = typer.Option(
        False, "--include-reasoning", help="Keep reasoning as reasoning_content."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Export trajectories in a trainer's format."""
    _report(export_file(src, out, fmt, include_reasoning, strict), "exported")
