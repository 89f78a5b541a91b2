"""`agentmill score`, `agentmill filter`, `agentmill export`: one stage on a file."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from agentmill.curation.configs import FilterConfig
from agentmill.errors import UserError
from agentmill.export import FORMATS
from agentmill.export.configs import ExportConfig
from agentmill.fileops import FileResult, export_file, filter_file, score_file


def _report(r: FileResult, verb: str) -> None:
    con = Console(emoji=False)
    con.print(f"read {r.read}   {verb} {r.written}   -> {r.out}")
    for reason, n in r.dropped.most_common():
        con.print(f"  dropped {reason}: {n}")
    for reason, n in r.bad.most_common():
        con.print(f"  [yellow]skipped bad record[/] {reason}: {n}")


def score_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    out: Path = typer.Option(..., "--out", "-o", help="Output .jsonl."),
    reward: list[str] = typer.Option(..., "--reward", "-r", help="A reward type (repeatable)."),
    tasks: Path | None = typer.Option(
        None, "--tasks", help="Tasks with ground truths (default: the run's)."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Score trajectories with verifiable rewards.

    Rewards: math, code, tool_call, format, exact, contains, regex."""
    _report(score_file(src, out, reward, tasks, strict), "scored")


def filter_cmd(
    src: Path = typer.Argument(..., help="Trajectories (.jsonl) or a run folder."),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output .jsonl (drops go to <out>.dropped.jsonl)."
    ),
    min_reward: float | None = typer.Option(
        None, "--min-reward", help="Every reward must be >= this."
    ),
    reward: str | None = typer.Option(
        None, "--reward", help="Apply --min-reward to this reward only."
    ),
    successful_only: bool = typer.Option(
        False, "--successful-only", help="Keep only answered trajectories."
    ),
    max_steps: int | None = typer.Option(
        None, "--max-steps", min=1, help="Drop longer trajectories."
    ),
    valid_tool_calls_only: bool = typer.Option(
        False, "--valid-tool-calls-only", help="Drop trajectories with malformed or unknown calls."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Keep the trajectories that pass; count every drop by reason."""
    cfg = FilterConfig(
        min_reward=min_reward,
        reward=reward,
        successful_only=successful_only,
        max_steps=max_steps,
        valid_tool_calls_only=valid_tool_calls_only,
    )
    _report(filter_file(src, out, cfg, strict), "kept")


def _export_config(fmt: str, out: Path, **options: object) -> ExportConfig:
    try:
        return ExportConfig.model_validate({"format": fmt, "path": out.name, **options})
    except ValidationError as e:
        err = e.errors()[0]
        if err["loc"][:1] == ("format",):
            raise UserError(
                f"--format {fmt}: unknown export format (available: {', '.join(FORMATS)})"
            ) from None
        flag = str(err["loc"][0]).replace("_", "-")
        raise UserError(f"--{flag}: {err['msg']} (see agentmill export --help)") from None


def export_cmd(
    src: Path = typer.Argument(
        ..., help="Trajectories (.jsonl), a run folder, or tasks (verl, trl-grpo)."
    ),
    fmt: str = typer.Option(
        "trl-sft",
        "--format",
        "-f",
        help="trl-sft, trl-dpo, sharegpt, sharegpt-ranking, react, trajectory, trl-grpo, verl, "
        "verl-sft or hf.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (hf: a folder)."),
    tasks: Path | None = typer.Option(
        None, "--tasks", help="Tasks with ground truths (default: the run's)."
    ),
    split: bool = typer.Option(
        False, "--split", help="Write <name>.train.<ext> and <name>.validation.<ext>."
    ),
    val_fraction: float = typer.Option(
        0.05, "--val-fraction", help="Share of tasks in validation (tasks without a split)."
    ),
    include_reasoning: bool = typer.Option(
        False, "--include-reasoning", help="Keep reasoning as reasoning_content."
    ),
    prompt_completion: bool = typer.Option(
        False, "--prompt-completion", help="trl-sft: {prompt, completion} records."
    ),
    reward: str | None = typer.Option(
        None, "--reward", help="The reward that ranks samples / is final_reward (default: mean)."
    ),
    min_margin: float = typer.Option(0.5, "--min-margin", help="trl-dpo: least reward gap."),
    max_pairs: int = typer.Option(1, "--max-pairs-per-task", help="trl-dpo: pairs per task."),
    simpler: bool = typer.Option(
        False, "--simpler", help="trl-dpo: also pair ties with clearly longer samples."
    ),
    simpler_min_steps: int = typer.Option(2, "--simpler-min-steps", help="--simpler: more steps."),
    simpler_min_tokens: int = typer.Option(
        0, "--simpler-min-tokens", help="--simpler: or more tokens."
    ),
    assistant_text: str = typer.Option(
        "drop", "--assistant-text", help="sharegpt: text beside a call: drop or think."
    ),
    react_form: str = typer.Option(
        "prompt_completion", "--react-form", help="react: prompt_completion or text."
    ),
    verl_reward: str = typer.Option(
        "math", "--verl-reward", help="verl: the reward compute_score applies."
    ),
    tool_class: str | None = typer.Option(
        None, "--tool-class", help="verl: module.Class of the verl tool for the tasks' tools."
    ),
    license_id: str = typer.Option("unknown", "--license", help="hf: the card's licence."),
    save_to_disk: bool = typer.Option(
        False, "--save-to-disk", help="hf: also the Arrow copy load_from_disk reads."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 2 on a bad input line."),
) -> None:
    """Export trajectories (verl, trl-grpo: tasks) in a trainer's format."""
    cfg = _export_config(
        fmt,
        out,
        split=split,
        val_fraction=val_fraction,
        include_reasoning=include_reasoning,
        prompt_completion=prompt_completion,
        reward=reward,
        min_margin=min_margin,
        max_pairs_per_task=max_pairs,
        simpler_mode=simpler,
        simpler_min_steps=simpler_min_steps,
        simpler_min_tokens=simpler_min_tokens,
        assistant_text=assistant_text,
        react_form=react_form,
        verl_reward=verl_reward,
        tool_class=tool_class,
        license=license_id,
        save_to_disk=save_to_disk,
    )
    result = export_file(src, out, cfg, tasks, strict)
    _report(result, "exported")
    for path, n in result.files.items():
        Console(emoji=False).print(f"  {path}: {n}")
    for note in result.notes:
        Console(emoji=False).print(f"  [yellow]note[/] {note}")
