"""`agentmill judge IN -o OUT`: an LLM judge marks each trajectory GOOD or BAD, resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from agentmill.config import BackendConfig, LocalBackendConfig, OpenAIBackendConfig
from agentmill.configfile import format_validation_error, read_yaml
from agentmill.errors import UserError
from agentmill.scoring.judge_config import JudgeConfig
from agentmill.scoring.judge_stage import JudgeFileResult, judge_file


class JudgeFile(BaseModel):
    """The parts of a YAML file `agentmill judge --config` reads; other keys are ignored, so a
    run config works too."""

    model_config = ConfigDict(extra="ignore")
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)


def _from_file(path: Path) -> tuple[JudgeConfig, Any]:
    try:
        f = JudgeFile.model_validate(read_yaml(path))
    except ValidationError as e:
        raise UserError(format_validation_error(e, f"config {path}")) from None
    name = f.judge.backend
    if name not in f.backends:
        have = ", ".join(sorted(f.backends)) or "none"
        raise UserError(
            f"config {path}: judge.backend '{name}' is not in backends (defined: {have}); "
            f"add backends.{name} or set judge.backend"
        )
    return f.judge, f.backends[name]


def _direct(base_url: str | None, model: str | None, key_env: str | None, embedded: bool) -> Any:
    if embedded:
        return LocalBackendConfig(model=model or "smollm2-135m")
    if not base_url or not model:
        raise UserError(
            "no judge model: pass --base-url URL --model NAME (an OpenAI-compatible server), "
            "--embedded (the local model), or --config FILE with backends: and judge:"
        )
    try:
        return OpenAIBackendConfig(base_url=base_url, model=model, api_key_env=key_env)
    except ValidationError as e:
        raise UserError(format_validation_error(e, "--base-url")) from None


def _rubric(text: str | None, path: Path | None) -> str | None:
    parts = [text] if text else []
    if path is not None:
        if not path.is_file():
            raise UserError(f"--rubric-file {path}: not found; pass a text file, one rule a line")
        parts.append(path.read_text())
    return "\n".join(parts) if parts else None


def _report(r: JudgeFileResult) -> None:
    con = Console(emoji=False)
    v = r.verdicts
    con.print(
        f"read {r.read}   judged {sum(v.values())}: GOOD {v['GOOD']}   BAD {v['BAD']}   "
        f"ERROR {v['ERROR']}   already judged {r.already}   -> {r.out}"
    )
    if r.dropped_path.exists():
        con.print(f"  dropped (BAD): {r.dropped_path}")
    for reason, n in r.bad.most_common():
        con.print(f"  [yellow]skipped bad record[/] {reason}: {n}")
    if v["ERROR"]:
        con.print(f"  [red]ERROR[/] {v['ERROR']}: run the same command again to retry them")


def judge_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Kept trajectories, appended (BAD: <out>.dropped.jsonl)."
    ),
    config: Path | None = typer.Option(
        None, "--config", help="YAML with backends: and judge: (judge.backend names one)."
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible endpoint."),
    model: str | None = typer.Option(None, "--model", help="The judge model's name."),
    api_key_env: str | None = typer.Option(
        None, "--api-key-env", help="NAME of the variable holding the API key."
    ),
    embedded: bool = typer.Option(
        False, "--embedded", help="Judge with the embedded model, in-process (offline)."
    ),
    rubric: str | None = typer.Option(None, "--rubric", help="Extra criteria, one per line."),
    rubric_file: Path | None = typer.Option(
        None, "--rubric-file", help="A text file of extra criteria."
    ),
    print_reason: bool = typer.Option(False, "--print-reason", help="Print each verdict's reason."),
    concurrency: int | None = typer.Option(
        None, "--concurrency", min=1, help="Judge calls in flight (default 16)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Judge trajectories GOOD or BAD with an LLM; the same command resumes (ERROR: retried).

    Exit 1 when some verdicts are ERROR (a failed call or an unparseable reply)."""
    if config is not None and (base_url or model or api_key_env or embedded):
        raise UserError("pass either --config FILE or --base-url/--model/--embedded, not both")
    if config is not None:
        jcfg, bcfg = _from_file(config)
    else:
        jcfg, bcfg = JudgeConfig(), _direct(base_url, model, api_key_env, embedded)
    update: dict[str, Any] = {"print_reason": print_reason or jcfg.print_reason}
    if concurrency is not None:
        update["max_concurrency"] = concurrency
    extra = _rubric(rubric, rubric_file)
    if extra:
        update["custom_rubrics"] = "\n".join(r for r in (jcfg.custom_rubrics, extra) if r)
    result = judge_file(src, out, jcfg.model_copy(update=update), bcfg, jcfg.backend, strict)
    _report(result)
    raise typer.Exit(1 if result.verdicts["ERROR"] else 0)
