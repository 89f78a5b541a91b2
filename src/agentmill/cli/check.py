"""`agentmill check-template`: render exported records through a chat template and check them."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from agentmill.export.template_check import Report


def check_template_cmd(
    src: Path = typer.Argument(..., help="An exported .jsonl file (trl-sft or trl-dpo)."),
    tokenizer: str = typer.Option(
        ...,
        "--tokenizer",
        "-t",
        help="A local tokenizer or model folder, or an embedded model name (smollm2-135m).",
    ),
    template: Path | None = typer.Option(
        None, "--template", help="A chat template (.jinja) to use instead of the default one."
    ),
    max_examples: int = typer.Option(
        3, "--max-examples", min=0, help="Examples shown per problem kind."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a line that is no record."),
) -> None:
    """Check that records render through a chat template as they will train.

    Exit 0 when clean, 1 when problems are found, 2 on bad input. The embedded model's name
    checks against agentmill's tool template; a folder against its own template."""
    from agentmill.export.template_check import check_file

    report = check_file(src, tokenizer, template, max_examples, strict=strict)
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        _print(report)
    if not report.clean:
        raise typer.Exit(1)


def _print(r: Report) -> None:
    con = Console(highlight=False, soft_wrap=True, emoji=False)
    markers = "yes" if r.markers else "no"
    con.print(f"checked {r.checked} records of {r.path}")
    con.print(f"  tokenizer {r.tokenizer}; template {escape(r.template)}; markers {markers}")
    for reason, n in r.skipped.most_common():
        con.print(f"  [yellow]skipped[/] {reason}: {n}")
    if r.clean:
        con.print("[green]clean[/]: no problems found")
        return
    con.print(f"[red]problems[/] in {r.flagged} of {r.checked} records:")
    for kind, info in r.to_dict()["problems"].items():
        con.print(f"  {kind}: {info['count']}  ({escape(info['hint'])})")
        for ex in info["examples"]:
            con.print(f"    {ex['record']}: {escape(ex['detail'])}")
