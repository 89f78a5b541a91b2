"""`agentmill report FILE_OR_RUN -o OUT`: one self-contained HTML page, or a Markdown report."""

from __future__ import annotations

from pathlib import Path

import typer

from agentmill.report.html import write_report


def report_cmd(
    path: Path = typer.Argument(..., help="A trajectories JSONL file or a run folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Where to write the report."),
    fmt: str = typer.Option("html", "--format", help="html (one offline page) or md."),
    examples: int = typer.Option(
        10, "--examples", min=0, help="How many best and worst trajectories to show."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample shown when nothing is scored."),
    stage: str | None = typer.Option(
        None, "--stage", help="Report on this stage's output of a run folder (default: score)."
    ),
) -> None:
    """Write a report of PATH: funnel, reward/steps/length histograms, tools, examples."""
    written = write_report(path, out, fmt=fmt, n_examples=examples, seed=seed, stage=stage)
    typer.echo(f"report: {written}")
