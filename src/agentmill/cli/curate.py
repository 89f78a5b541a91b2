"""`agentmill dedup | decontaminate | balance`: one curation stage on a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console

from agentmill.curation.dedup_config import BalanceConfig, DecontamConfig, DedupConfig
from agentmill.curation.stage import curate_file, dropped_path, funnel_lines
from agentmill.errors import UserError

SRC_HELP = "Trajectories (.jsonl) or a run folder."
OUT_HELP = "Output .jsonl (drops go to <out>.dropped.jsonl)."
STRICT_HELP = "Exit 2 on a bad input line."
FLAGS = {"eval_files": "--eval", "proportions": "--target", "allow_upsample": "--upsample"}


def _config(cls: type[Any], **values: Any) -> Any:
    """The stage config of the options; a bad value is one line naming the option."""
    try:
        return cls(**values)
    except ValidationError as e:
        first = e.errors()[0]
        name = str(first["loc"][0]) if first["loc"] else ""
        flag = FLAGS.get(name, "--" + name.replace("_", "-")) if name else "options"
        got = first.get("input")
        shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
        raise UserError(f"{flag}: {first['msg'].removeprefix('Value error, ')}{shown}") from None


def _run(
    name: str, src: Path, out: Path, cfg: Any, strict: bool, tasks: Path | None = None
) -> None:
    r, stats = curate_file(name, src, out, cfg, strict, tasks)
    con = Console(highlight=False, emoji=False)
    con.print(f"read {r.read}   kept {r.written}   -> {r.out}", markup=False)
    for line in funnel_lines({name: stats}):
        con.print(f"  {line}", markup=False)
    for set_name, st in stats.get("eval_sets", {}).items():
        con.print(f"  eval set {set_name}: {st['items']} items, {st['hits']} hits", markup=False)
    if r.dropped:
        con.print(f"  dropped records: {dropped_path(out)}", markup=False)
    for reason, n in r.bad.most_common():
        con.print(f"  [yellow]skipped bad record[/] {reason}: {n}")


def dedup_cmd(
    src: Path = typer.Argument(..., help=SRC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    field: str = typer.Option("query", "--field", help="query, answer or text (whole trajectory)."),
    threshold: float = typer.Option(0.8, "--threshold", help="Near-duplicate Jaccard threshold."),
    shingle_size: int = typer.Option(3, "--shingle-size", help="Words per shingle."),
    no_near: bool = typer.Option(False, "--no-near", help="Only exact duplicates."),
    no_exact: bool = typer.Option(False, "--no-exact", help="Only near duplicates."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Drop exact and near-duplicate trajectories, keeping the best-scored of each cluster."""
    if no_near and no_exact:
        raise UserError("--no-near and --no-exact together leave nothing to do; drop one")
    cfg = _config(
        DedupConfig,
        field=field,
        threshold=threshold,
        shingle_size=shingle_size,
        near=not no_near,
        exact=not no_exact,
    )
    _run("dedup", src, out, cfg, strict)


def _eval_entry(spec: str) -> dict[str, str]:
    """`FILE` or `FILE:NAME` (a path that exists as given is never split)."""
    path, sep, name = spec.rpartition(":")
    if Path(spec).exists() or not sep or not path or "/" in name:
        return {"path": spec}
    return {"path": path, "name": name}


def decontaminate_cmd(
    src: Path = typer.Argument(..., help=SRC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    eval_file: list[str] = typer.Option(
        ..., "--eval", help="An eval set: FILE or FILE:NAME (.jsonl, .parquet, text; repeatable)."
    ),
    ngram: int = typer.Option(13, "--ngram", help="Words in a shared n-gram that makes a hit."),
    scope: str = typer.Option("user", "--scope", help="query (the task's) or user (every turn)."),
    field: str | None = typer.Option(
        None, "--field", help="Eval field holding the text (default: question, prompt, ...)."
    ),
    min_words: int = typer.Option(
        8, "--min-words", help="Eval items under --ngram words are matched whole if this long."
    ),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Drop trajectories whose query (or any user turn) shares a long n-gram with an eval set."""
    cfg = _config(
        DecontamConfig,
        eval_files=[_eval_entry(e) for e in eval_file],
        ngram=ngram,
        scope=scope,
        field=field,
        min_words=min_words,
    )
    _run("decontaminate", src, out, cfg, strict)


def _targets(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            out[key] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key:
            raise UserError(f"--target {item}: expected KEY=FRACTION, e.g. --target math=0.5")
    return out


def balance_cmd(
    src: Path = typer.Argument(..., help=SRC_HELP),
    out: Path = typer.Option(..., "--out", "-o", help=OUT_HELP),
    key: str = typer.Option(
        ..., "--key", help="tool, source, reward, category, model, or a path (metadata.NAME)."
    ),
    cap: int | None = typer.Option(None, "--cap", min=0, help="Keep at most N per key."),
    target: list[str] = typer.Option(
        [], "--target", help="KEY=FRACTION of the output (repeatable); unlisted keys are dropped."
    ),
    upsample: bool = typer.Option(
        False, "--upsample", help="With --target: repeat records of short keys to reach the mix."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the --target sampling."),
    tasks: Path | None = typer.Option(
        None, "--tasks", help="Tasks for --key category / task.* (default: the run's)."
    ),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
) -> None:
    """Cap or resample trajectories per key to a target mix; prints counts before -> after."""
    if (cap is None) == (not target):
        raise UserError("pass exactly one of --cap N or --target KEY=FRACTION ...")
    mode = "cap" if cap is not None else "proportions"
    props = _targets(target)
    cfg = _config(
        BalanceConfig,
        key=key,
        mode=mode,
        cap=cap,
        proportions=props,
        allow_upsample=upsample,
        seed=seed,
    )
    _run("balance", src, out, cfg, strict, tasks)
