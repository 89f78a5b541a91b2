"""`agentmill run CONFIG`: run, resume or top up a pipeline run."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from agentmill.configfile import load_config
from agentmill.curation.stage import funnel_lines
from agentmill.pipeline import RunSummary, run
from agentmill.stages import Funnel, funnel_dict
from agentmill.summary import funnel_rows


def run_cmd(
    config: Path = typer.Argument(..., help="YAML run config."),
    override: list[str] = typer.Option(
        [], "-c", help="key.path=value, or another YAML file to merge."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>)."),
    new: bool = typer.Option(False, "--new", help="Start a fresh run folder instead of resuming."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Use only the first N tasks."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Validate and plan; make no model calls."
    ),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not read or write the response cache."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 if any source record is bad."),
    max_bad_fraction: float | None = typer.Option(
        None,
        "--max-bad-fraction",
        min=0,
        max=1,
        help="Exit 2 if more bad source records than this.",
    ),
) -> None:
    """Run the pipeline of CONFIG; the same command resumes a killed run."""
    cfg = load_config(config, override)
    cfg = cfg.model_copy(
        update={
            "strict": cfg.strict or strict,
            "max_bad_fraction": max_bad_fraction
            if max_bad_fraction is not None
            else cfg.max_bad_fraction,
        }
    )
    summary = run(cfg, out, new=new, limit=limit, dry_run=dry_run, no_cache=no_cache)
    print_summary(summary)
    raise typer.Exit(summary.exit_code)


def print_summary(s: RunSummary) -> None:
    con = Console(emoji=False)
    if s.topped_up:
        con.print(f"topped up: {'; '.join(s.topped_up)}")
    verb = "planned" if s.dry_run else "finished"
    con.print(f"[bold]{verb}[/] run {s.run_dir} in {s.seconds:.1f}s")
    con.print(
        f"  tasks {s.tasks}   bad records {s.bad_records}   trajectories {s.done}/{s.expected}"
        f"   new {s.made}   pending {s.pending}"
    )
    if not s.dry_run:
        con.print(f"  model calls {s.model_calls}   cache hits {s.cache_hits}")
    for reason, n in s.failed.most_common():
        con.print(f"  [red]failed[/] {n} ({reason}): re-run the same command to retry")
    if s.funnel is not None:
        print_funnel(con, s.funnel)
    con.print(f"  trajectories: {s.run_dir / 'rollout' / 'records.jsonl'}")
    for path in s.funnel.exported if s.funnel else {}:
        con.print(f"  export:       {s.run_dir / path}")
    tasks_out = s.funnel.tasks_out if s.funnel else {}
    if tasks_out:
        con.print(
            f"  tasks:        {tasks_out.get('path')} (added {tasks_out.get('added', 0)}, "
            f"already there {tasks_out.get('already', 0)})"
        )
    if s.report is not None:
        con.print(f"  report:       {s.report}")
    elif s.report_error is not None:
        con.print(
            f"  [yellow]warning[/] report.html not written ({s.report_error}); "
            f"write it with: agentmill report {s.run_dir} -o {s.run_dir / 'report.html'}",
            markup=True,
            highlight=False,
        )
    if s.bad_records or s.failed:
        con.print(f"  failures:     {s.run_dir / 'failures.jsonl'}")


def _pct(n: int, d: int) -> str:
    return f"{n:>6} ({100 * n / d:5.1f}%)" if d else f"{n:>6}"


def print_funnel(con: Console, f: Funnel) -> None:
    """tasks -> trajectories -> with a well-formed call -> correct -> kept -> exported."""
    con.print("  [bold]funnel[/]")
    for i, (label, n) in enumerate(funnel_rows(funnel_dict(f))):
        con.print(f"    {label:<28}{_pct(n, f.trajectories if i > 1 else 0)}")
    for reason, n in f.dropped.most_common():
        con.print(f"    dropped {reason}: {n}")
    for verdict in ("BAD", "ERROR"):
        if f.judged.get(verdict):
            hint = " (re-run the same command to retry)" if verdict == "ERROR" else ""
            con.print(f"    judge {verdict}: {f.judged[verdict]}{hint}")
    for line in funnel_lines(f.curation):
        con.print(f"    {line}", markup=False, highlight=False)
    for reason, n in (f.export_skipped + f.score_failed).most_common():
        con.print(f"    [yellow]not exported / not scored[/] {reason}: {n}")
