"""`agentmill train {sft,dpo,grpo} DATA --model M --out DIR`: TRL on our exports."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console

from agentmill.errors import UserError


def train_cmd(
    method: str = typer.Argument(..., help="sft (trl-sft export), dpo (trl-dpo), grpo (trl-grpo)."),
    data: Path = typer.Argument(..., help="The export: JSONL, parquet, or an hf export folder."),
    model: str = typer.Option(..., "--model", "-m", help="A model folder or an embedded model."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder of the trained model and its log."),
    lora: bool = typer.Option(True, "--lora/--full", help="LoRA adapters (peft), or full weights."),
    lora_r: int = typer.Option(16, "--lora-r", min=1, help="LoRA rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", min=1, help="LoRA alpha."),
    epochs: float = typer.Option(1.0, "--epochs", min=0, help="Passes over the data."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Optimizer steps (overrides epochs)."),
    learning_rate: float | None = typer.Option(
        None, "--lr", help="Default: 2e-4 SFT, 5e-5 DPO/GRPO with LoRA; 10x lower full."
    ),
    batch_size: int = typer.Option(4, "--batch-size", min=1, help="Per-device batch size."),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1, help="Gradient accumulation."),
    max_length: int = typer.Option(2048, "--max-length", min=16, help="Tokens per sequence."),
    seed: int = typer.Option(0, "--seed"),
    merge: bool = typer.Option(
        True, "--merge/--no-merge", help="Merge LoRA into the weights (the adapter is kept too)."
    ),
    checkpointing: bool = typer.Option(
        True,
        "--checkpointing/--no-checkpointing",
        help="Activation checkpointing: less memory, ~1/3 more compute (off: faster on CPU).",
    ),
    prefix_sharing: bool = typer.Option(
        True,
        "--prefix-sharing/--no-prefix-sharing",
        help="SFT without checkpointing: run the rows' common prefix (system prompt, tools) "
        "once per batch.",
    ),
    group_by_length: bool = typer.Option(
        False,
        "--group-by-length",
        help="SFT: batch rows of similar length together (less padding), batches in random order.",
    ),
    save_steps: int = typer.Option(
        0, "--save-steps", min=0, help="Checkpoint every N steps; a re-run resumes from the last."
    ),
    beta: float = typer.Option(0.1, "--beta", min=0, help="DPO beta / GRPO KL coefficient."),
    reward: list[str] = typer.Option(
        ["math"], "--reward", help="GRPO: our rewards to optimize (repeat for several)."
    ),
    num_generations: int = typer.Option(
        4, "--num-generations", min=2, help="GRPO: completions per prompt."
    ),
    max_completion_length: int = typer.Option(
        256, "--max-completion-length", min=1, help="GRPO: tokens per completion."
    ),
    tool: list[str] = typer.Option(
        [],
        "--tool",
        help="GRPO: a tool the policy calls while generating: calculator, search, python, "
        "or pkg.module:function (repeat for several).",
    ),
    max_tool_rounds: int = typer.Option(
        4, "--max-tool-rounds", min=1, help="GRPO: tool-calling turns per completion."
    ),
) -> None:
    """Train MODEL on an export; writes a model folder the local backend and servers load."""
    from agentmill.train.trainer import TrainOptions, train

    try:
        opts = TrainOptions(
            method=method,
            lora=lora,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            epochs=epochs,
            max_steps=max_steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            grad_accum=grad_accum,
            max_length=max_length,
            seed=seed,
            merge=merge,
            save_steps=save_steps,
            checkpointing=checkpointing,
            prefix_sharing=prefix_sharing,
            group_by_length=group_by_length,
            beta=beta,
            rewards=reward,
            num_generations=num_generations,
            max_completion_length=max_completion_length,
            tools=tool,
            max_tool_rounds=max_tool_rounds,
        )
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        hint = "; use sft, dpo or grpo" if where == "method" else ""
        msg = err["msg"].removeprefix("Value error, ")
        raise UserError(f"train {where}: {msg}{hint}" if where else f"train: {msg}") from None
    s = train(data, model, out, opts)
    con = Console(emoji=False)
    losses = f"loss {s['first_loss']:.4g} -> {s['last_loss']:.4g}" if s["first_loss"] else ""
    con.print(
        f"[bold]trained[/] {s['method']} on {s['records']} records, {s['steps']} steps "
        f"in {s['seconds']:.1f}s  {losses}",
        highlight=False,
    )
    con.print(f"  chat template: {s['chat_template']}", highlight=False)
    if "model" in s:
        con.print(f"  model:   {s['model']}", highlight=False)
    if "adapter" in s:
        con.print(f"  adapter: {s['adapter']}", highlight=False)
    con.print(f"  log:     {out / 'train_log.jsonl'}  ({out / 'train.json'})", highlight=False)


def merge_cmd(
    config: Path = typer.Argument(..., help="A mergekit YAML config (passed through, validated)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder of the merged model."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random methods (DARE)."),
    tasks: Path | None = typer.Option(
        None, "--tasks", help="Then evaluate each input and the merged model on these tasks."
    ),
    eval_config: Path | None = typer.Option(
        None, "--eval-config", help="The run config whose tools and rewards the eval uses."
    ),
) -> None:
    """Merge models with mergekit (linear, slerp, ties, dare_ties, task_arithmetic, ...)."""
    from agentmill.train.merge import merge

    s = merge(config, out, seed)
    Console(emoji=False).print(
        f"[bold]merged[/] ({s['merge_method']}) into {s['model']} in {s['seconds']:.1f}s",
        highlight=False,
    )
    if tasks is not None:
        from agentmill.cli.evaluate import print_eval
        from agentmill.configfile import load_config
        from agentmill.evaluation import evaluate

        base = load_config(eval_config) if eval_config else None
        report = evaluate([*s["inputs"], str(out)], tasks, out / "eval", base)
        print_eval(report, tasks, out / "eval")


def flywheel_cmd(
    config: Path = typer.Argument(..., help="Flywheel YAML: run, student, eval_tasks, train."),
    rounds: int = typer.Option(1, "--rounds", "-n", min=1, help="Training rounds to reach."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Folder (default runs/<name>)."),
) -> None:
    """Rounds of sample -> verify -> filter -> train -> evaluate; resumes where it stopped."""
    from rich.table import Table

    from agentmill.flywheel import flywheel

    rows = flywheel(config, rounds, out)
    table = Table("round", "sampler", "train records", "success (95% CI)", "called a tool")
    for r in rows:
        ev = r["eval"]
        lo, hi = ev["success"]["ci95"]
        table.add_row(
            str(r["round"]),
            r.get("sampler", "-"),
            str(r["data"]["records"]) if "data" in r else "-",
            f"{100 * ev['success']['value']:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}]",
            f"{100 * ev['called']['value']:.1f}%",
        )
    Console(emoji=False).print(table)
