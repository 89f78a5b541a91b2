"""`agentmill synth tools|docs`: tasks written by a generator model, kept only when checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import Field, ValidationError
from rich.console import Console

from agentmill.config import BackendConfig, CacheConfig
from agentmill.configbase import Component
from agentmill.errors import UserError

app = typer.Typer(
    no_args_is_help=True,
    help="Synthesize tasks from tool schemas or documents; every candidate is checked.",
)
DEFAULT_BACKENDS = {"generator": {"type": "local", "model": "smollm2-135m"}}
_JOB_KEYS = ("backends", "seed", "cache")

CONFIG_HELP = (
    "YAML with `backends:` (generator, solver, judge) and any synth option "
    "(docs/synth.md); default: the embedded model as generator."
)
OVERRIDE_HELP = "key.path=value override of the --config settings."


class SynthJob(Component):
    """The backends, seed and cache of one `agentmill synth` command."""

    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    seed: int = 0
    cache: CacheConfig = Field(default_factory=CacheConfig)


def tools_cmd(
    tools: str = typer.Argument(
        ..., help="JSON file of OpenAI tool schemas, a .py file, or a module (functions = tools)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Where the kept tasks go (JSONL)."),
    n: int = typer.Option(20, "--n", min=1, help="Candidates to generate."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    override: list[str] = typer.Option([], "-c", help=OVERRIDE_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the cache."),
) -> None:
    """Queries and their expected calls from tool schemas: format, execution, judge checks."""
    _run({"kind": "tools", "tools": tools, "n": n}, out, config, override, no_cache)


def docs_cmd(
    corpus: Path = typer.Argument(..., help="Folder of .txt/.md files or a JSONL corpus."),
    out: Path = typer.Option(..., "--out", "-o", help="Where the kept tasks go (JSONL)."),
    n: int = typer.Option(20, "--n", min=1, help="Candidates to generate."),
    config: Path | None = typer.Option(None, "--config", help=CONFIG_HELP),
    override: list[str] = typer.Option([], "-c", help=OVERRIDE_HELP),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the cache."),
) -> None:
    """Multi-hop questions over document chains: support, leak, solver and no-tool checks."""
    if not corpus.exists():
        raise UserError(f"corpus not found: {corpus}; pass a folder of .txt/.md files or a JSONL")
    _run({"kind": "docs", "corpus": str(corpus), "n": n}, out, config, override, no_cache)


app.command("tools")(tools_cmd)
app.command("docs")(docs_cmd)


def load_source(given: dict[str, Any], config: Path | None, overrides: list[str]) -> Any:
    """The bound `SynthSourceConfig` from the command's arguments, --config and -c."""
    from agentmill.configfile import format_validation_error
    from agentmill.synth.configs import SynthSourceConfig, check_backends

    data = _settings(config, overrides)
    job_data = {k: data.pop(k) for k in _JOB_KEYS if k in data}
    job_data.setdefault("backends", DEFAULT_BACKENDS)
    what = f"synth config {config}" if config else "synth options"
    try:
        job = SynthJob.model_validate(job_data)
        src = SynthSourceConfig.model_validate({**data, **given})
        check_backends(src, job.backends, "synth")
    except ValidationError as e:
        raise UserError(format_validation_error(e, what)) from None
    except ValueError as e:
        raise UserError(f"{what}: {e}") from None
    src.bind(job.backends, job.seed, job.cache.enabled, job.cache.path)
    return src


def _settings(config: Path | None, overrides: list[str]) -> dict[str, Any]:
    import yaml

    from agentmill.configfile import _set_path, read_yaml

    data = read_yaml(config) if config else {}
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise UserError(f"override '{item}': expected key.path=value")
        _set_path(data, key.strip(), yaml.safe_load(raw) if raw else "")
    return data


def _run(
    given: dict[str, Any], out: Path, config: Path | None, overrides: list[str], no_cache: bool
) -> None:
    from agentmill.synth.engine import side_paths, synthesize, write_outputs

    src = load_source(given, config, overrides)
    outcomes, stats = synthesize(src, no_cache=no_cache, show_progress=True)
    write_outputs(outcomes, out, stats)
    con = Console(emoji=False)
    con.print(
        f"[bold]synth {src.kind}[/]: {stats['candidates']} candidates, kept {stats['kept']} "
        f"({100 * stats['keep_rate']:.1f}%) in {stats['seconds']:.1f}s "
        f"({stats['candidates_per_minute']} candidates/min, {stats['model_calls']} model calls, "
        f"{stats['cache_hits']} cache hits)"
    )
    for reason, count in stats["dropped"].items():
        con.print(f"  dropped {reason}: {count}", markup=False)
    for note, count in stats["notes"].items():
        con.print(f"  {note}: {count}", markup=False)
    dropped, stats_path = side_paths(out)
    con.print(f"  tasks:   {out}\n  dropped: {dropped}\n  stats:   {stats_path}")
    failed = sum(c for r, c in stats["dropped"].items() if r.startswith("backend_"))
    if failed:
        con.print(f"  [red]{failed} model call(s) failed[/]: run the same command again to retry")
    raise typer.Exit(1 if failed else 0)
