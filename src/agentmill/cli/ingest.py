"""`agentmill ingest FORMAT PATH -o OUT.jsonl`: real agent traces -> trajectories (+ tasks)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from agentmill.errors import UserError
from agentmill.ingest.base import FORMATS, IngestOptions
from agentmill.ingest.driver import OPTION_FORMATS, IngestSummary, ingest
from agentmill.ingest.redact import Redactor


def ingest_cmd(
    format: str = typer.Argument(..., metavar="FORMAT", help=f"One of: {', '.join(FORMATS)}."),
    path: Path = typer.Argument(
        ..., metavar="PATH", help="The traces: a file, or a folder (mini-swe)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Trajectories .jsonl (appended to)."),
    tasks_out: Path | None = typer.Option(
        None, "--tasks-out", help="Also append one task per new query/answer pair here."
    ),
    project: list[str] = typer.Option(
        [], "--project", help="Studio project (repeatable; agentscope-studio)."
    ),
    run: list[str] = typer.Option(
        [], "--run", help="Run / conversation id (repeatable; studio, otel)."
    ),
    since: str | None = typer.Option(
        None, "--since", help="Turns starting at or after (ISO; studio, otel)."
    ),
    until: str | None = typer.Option(
        None, "--until", help="Turns starting before (ISO; studio, otel)."
    ),
    logs: Path | None = typer.Option(None, "--logs", help="OTLP logs file joined to spans (otel)."),
    redact: bool = typer.Option(False, "--redact", help="Mask keys, e-mails, phone numbers."),
    redact_pattern: list[str] = typer.Option(
        [], "--redact-pattern", help="Also mask this regex (repeatable)."
    ),
    val_fraction: float = typer.Option(
        0.3, "--val-fraction", min=0.0, max=1.0, help="Share of tasks in the validation split."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on the first bad record."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes rebuilding a Studio file (default: one per core, at most 8, from "
        "64 MiB; 1: serial). Same output for any number.",
    ),
) -> None:
    """Read agent traces (agentscope-studio, otel, chat-logs, mini-swe) into trajectories.

    Re-running adds only trajectories and tasks not in the outputs yet."""
    given = {"--project": project, "--run": run, "--since": since, "--until": until, "--logs": logs}
    given["--workers"] = workers
    _check_applies(format, given)
    opts = IngestOptions(
        projects=project,
        runs=run,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        logs=logs,
        strict=strict,
    )
    redactor = Redactor(redact_pattern, builtin=redact) if redact or redact_pattern else None
    summary = ingest(format, path, out, tasks_out, opts, redactor, val_fraction, workers)
    _report(summary, out, tasks_out)


def _check_applies(fmt: str, given: dict[str, object]) -> None:
    for option, value in given.items():
        formats = OPTION_FORMATS[option]
        if value not in (None, [], "") and fmt in FORMATS and fmt not in formats:
            raise UserError(f"{option} applies to {' and '.join(formats)} only; drop it for {fmt}")


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UserError(
            f"{option} {value!r} is not an ISO date/time; use e.g. 2026-01-31 or "
            "2026-01-31T12:00:00Z"
        ) from None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def _report(s: IngestSummary, out: Path, tasks_out: Path | None) -> None:
    con = Console(highlight=False, soft_wrap=True, emoji=False)
    read = ", ".join(f"{k} {v}" for k, v in s.read.items() if v) or "nothing"
    con.print(f"read: {read}")
    line = f"built {s.built} trajectories: {s.written} new -> {out}"
    con.print(line + (f", {s.already_written} already there" if s.already_written else ""))
    for reason, n in s.skipped.most_common():
        con.print(f"  [yellow]skipped[/] {reason}: {n} (first: {s.examples.get(reason, '?')})")
    if tasks_out is not None:
        line = f"tasks: {s.tasks_added} added, {s.tasks_present} already present -> {tasks_out}"
        if s.without_task:
            line += f"; {s.without_task} trajectories without a query or final answer"
        con.print(line)
