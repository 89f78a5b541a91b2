"""The `agentmill` command line: thin typer commands, each calling one library function.

Exit codes: 0 done; 1 the run finished but some items failed (re-run the same command to
retry them); 2 bad input (config, file, argument, unreachable endpoint), one line on stderr;
130 interrupted (re-run the same command to resume).
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from agentmill.cli import (
    analyze,
    check,
    curate,
    data,
    evaluate,
    ingest,
    inspect,
    judge,
    models,
    report,
    run,
    synth,
    train,
)
from agentmill.errors import AgentmillError

app = typer.Typer(
    name="agentmill",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Turn tasks and agent traces into verified training data for tool-using LLM agents.",
)
_state = {"verbose": False}
err = Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show tracebacks on errors."),
) -> None:
    _state["verbose"] = verbose


app.command("run")(run.run_cmd)
app.command("score")(data.score_cmd)
app.command("filter")(data.filter_cmd)
app.command("judge")(judge.judge_cmd)
app.command("dedup")(curate.dedup_cmd)
app.command("decontaminate")(curate.decontaminate_cmd)
app.command("balance")(curate.balance_cmd)
app.command("export")(data.export_cmd)
app.command("ingest")(ingest.ingest_cmd)
app.command("status")(inspect.status_cmd)
app.command("show")(inspect.show_cmd)
app.command("stats")(inspect.stats_cmd)
app.command("analyze")(analyze.analyze_cmd)
app.command("compare")(analyze.compare_cmd)
app.command("report")(report.report_cmd)
app.command("models")(models.models_cmd)
app.command("check-template")(check.check_template_cmd)
app.command("train")(train.train_cmd)
app.command("merge")(train.merge_cmd)
app.command("eval")(evaluate.eval_cmd)
app.command("flywheel")(train.flywheel_cmd)
app.add_typer(synth.app, name="synth")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors with the documented exit codes; `-v` for tracebacks.

    Usage errors (unknown option, missing argument) are click's own: usage text, exit 2.
    """
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="agentmill", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        err.print("interrupted: run the same command again to resume")
        return 130
    except AgentmillError as e:
        if _state["verbose"]:
            err.print_exception()
        err.print(f"[red]error:[/] {e}")
        return e.exit_code
    except Exception as e:  # a bug: still one line unless -v
        if _state["verbose"]:
            err.print_exception()
        err.print(
            f"[red]internal error:[/] {type(e).__name__}: {e} (run with -v for the traceback)"
        )
        return 1
    return 0


def entry() -> None:
    sys.exit(main())
