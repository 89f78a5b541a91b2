"""`agentmill eval MODEL [MODEL ...] --tasks FILE`: held-out figures, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

ROWS = (
    ("success", "success"),
    ("called", "called a tool"),
    ("well_formed_calls", "well-formed calls"),
    ("tool_selection", "tool selection"),
    ("arguments", "argument accuracy"),
    ("no_call", "no call on no-tool tasks"),
    ("steps", "mean steps"),
    ("completion_tokens", "mean completion tokens"),
)


def eval_cmd(
    models: list[str] = typer.Argument(
        ..., help="Model folders or embedded names (or, with --base-url, the server's model names)."
    ),
    tasks: Path = typer.Option(..., "--tasks", "-t", help="Held-out tasks (JSONL / parquet)."),
    config: Path | None = typer.Option(
        None, "--config", help="A run config whose tools, agent, prompts and rewards to use."
    ),
    out: Path = typer.Option(Path("runs/eval"), "--out", "-o", help="Folder of the eval runs."),
    base_url: str | None = typer.Option(
        None, "--base-url", help="Evaluate through an OpenAI-compatible server instead."
    ),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="NAME of the variable holding the server's key."
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N tasks."),
    new: bool = typer.Option(False, "--new", help="Fresh run folders instead of resuming."),
    as_json: bool = typer.Option(False, "--json", help="Print eval.json."),
) -> None:
    """Run each model on the tasks at temperature 0; success, calls, selection, arguments."""
    from agentmill.configfile import load_config
    from agentmill.evaluation import evaluate

    base = load_config(config) if config else None
    report = evaluate(models, tasks, out, base, base_url, api_key_env, limit, new)
    if as_json:
        typer.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    print_eval(report, tasks, out)


def print_eval(report: dict[str, Any], tasks: Path, out: Path) -> None:
    """The figures of every model as one table, a column per model."""
    results = report["models"]
    table = Table("figure (95% CI)", *results, title=f"eval on {tasks}")
    for key, label in ROWS:
        table.add_row(label, *(_cell(r[key]) for r in results.values()))
    Console(emoji=False).print(table)
    typer.echo(f"eval.json: {out / 'eval.json'}")


def _cell(f: dict[str, Any]) -> str:
    if f["value"] is None:
        return "-"
    lo, hi = f["ci95"]
    if "k" in f:  # a proportion
        return f"{100 * f['value']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}] ({f['k']}/{f['n']})"
    return f"{f['value']:.3g} [{lo:.3g}, {hi:.3g}]"
