"""`agentmill models`: the embedded models and whether they are converted and cached."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table


def models_cmd(
    prepare: str | None = typer.Option(
        None, "--prepare", help="Convert and cache this embedded model now."
    ),
) -> None:
    """List the embedded models (usable as `model:` of a `local` backend)."""
    from agentmill.models import list_models, resolve_model

    if prepare:
        path = resolve_model(prepare)
        Console(emoji=False).print(f"{prepare}: ready at {path}")
        return
    table = Table("name", "cached", "path", "source", "description")
    for m in list_models():
        table.add_row(
            m["name"], "yes" if m["cached"] else "no", str(m["path"]), m["source"], m["description"]
        )
    con = Console(emoji=False)
    con.print(table)
    con.print("Any local Hugging Face model folder (with config.json) works as `model:` too.")
