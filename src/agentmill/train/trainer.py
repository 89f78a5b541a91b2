"""`agentmill train {sft,dpo,grpo} DATA --model M --out DIR`: TRL on our exports.

    agentmill export kept.jsonl --format trl-sft -o sft.jsonl
    agentmill train sft sft.jsonl --model smollm2-135m --out models/sft-r1 --max-steps 200

What lands in `--out`:

    config.json, model.safetensors, tokenizer*   the model (LoRA merged in by default): the
                                                 `local` backend and `transformers serve` load it
    adapter/                                     the LoRA adapter alone (with --lora)
    train_log.jsonl                              one line per logged step (loss, lr, rewards, ...),
                                                 appended as training goes
    train.json                                   what was trained on what: the data's sha256 and
                                                 record count, the options, the chat template used,
                                                 steps, first/last loss, seconds, versions;
                                                 written last, so its presence means "complete"
    checkpoints/                                 with --save-steps: a killed run resumes from here

The chat template: a model whose template TRL can train with assistant-only loss (it has
`{% generation %}` markers, or TRL ships a patched copy, e.g. Qwen, Llama 3) keeps it. Any
other (SmolLM2's has neither tools nor markers) trains with agentmill's tool template, the one
the `local` backend samples tool calls with, and the saved tokenizer carries that template, so
the model is evaluated and served with the template it learned.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import Field, model_validator

from agentmill.configbase import Component
from agentmill.errors import UserError
from agentmill.store import write_atomic

Method = Literal["sft", "dpo", "grpo"]
COLUMNS: dict[str, tuple[str, ...]] = {
    "sft": ("messages",),
    "dpo": ("prompt", "chosen", "rejected"),
    "grpo": ("prompt",),
}
# (method, lora) -> learning rate when none is given: the usual starting points
DEFAULT_LR = {
    ("sft", True): 2e-4,
    ("sft", False): 2e-5,
    ("dpo", True): 5e-5,
    ("dpo", False): 5e-6,
    ("grpo", True): 5e-5,
    ("grpo", False): 1e-6,
}
OUR_TEMPLATE = "agentmill tool template"


class TrainOptions(Component):
    """The options of one training job (the CLI's flags, one to one)."""

    method: Method
    lora: bool = True
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, ge=-1)  # -1: the epochs decide
    learning_rate: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=4, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    max_length: int = Field(default=2048, ge=16)
    seed: int = 0
    merge: bool = True
    save_steps: int = Field(default=0, ge=0)  # 0: no checkpoints
    # activation (gradient) checkpointing, TRL's default: recomputes activations in the
    # backward pass (less memory, about a third more compute); off trains faster on CPU
    checkpointing: bool = True
    # SFT: rows that open with the same tokens (system prompt, tool schemas) run them once per
    # batch (train/prefix.py; same loss and gradients); needs `checkpointing: false`
    prefix_sharing: bool = True
    # SFT: batches of rows of similar length, less padding (transformers' LengthGroupedSampler:
    # rows shuffled, cut into about four groups of up to 50 batches, each group sorted longest
    # first); the loss per row is unchanged, the mix within a step is not
    group_by_length: bool = False
    beta: float = Field(default=0.1, ge=0)  # DPO's beta; GRPO's KL coefficient
    rewards: list[str] = Field(default_factory=lambda: ["math"])  # GRPO
    num_generations: int = Field(default=4, ge=2)  # GRPO: completions per prompt
    max_completion_length: int = Field(default=256, ge=1)  # GRPO
    # GRPO: our tools the policy may call while it generates (run by TRL between turns): a
    # tool type ("calculator", "search", "python") or a function path ("pkg.mod:function")
    tools: list[str] = Field(default_factory=list)
    max_tool_rounds: int = Field(default=4, ge=1)  # GRPO: tool-calling turns per completion

    @property
    def lr(self) -> float:
        return self.learning_rate or DEFAULT_LR[(self.method, self.lora)]

    @model_validator(mode="after")
    def _grouping_is_sft_only(self) -> TrainOptions:
        if self.group_by_length and self.method != "sft":
            raise ValueError(
                "group_by_length applies to sft only (DPO pairs and GRPO prompts "
                "have no single length); drop it"
            )
        return self


def data_sha256(path: Path) -> str:
    """The hash of the exact bytes trained on (every file of a folder, in name order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_data(path: Path, method: str) -> Any:
    """The export as a `datasets.Dataset`: JSONL / JSON, parquet, or an `hf` export folder."""
    import datasets
    from datasets import load_dataset, load_from_disk

    datasets.disable_progress_bars()  # errors stay one line; the trainer shows its own progress
    if not path.exists():
        raise UserError(f"training data not found: {path}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = load_from_disk(str(path))
        else:
            ds = load_dataset(str(path))
        if hasattr(ds, "keys"):  # a DatasetDict: train on its train split
            if "train" not in ds:
                raise UserError(f"{path} has no train split (splits: {', '.join(ds)})")
            ds = ds["train"]
    else:
        kind = "parquet" if path.suffix == ".parquet" else "json"
        try:
            ds = load_dataset(kind, data_files=str(path), split="train")
        except Exception as e:  # noqa: BLE001 - datasets raises many types for a bad file
            raise UserError(
                f"{path} could not be read as {kind} ({type(e).__name__}); pass the file "
                f"`agentmill export --format trl-{method}` wrote"
            ) from None
    missing = [c for c in COLUMNS[method] if c not in ds.column_names]
    if missing:
        have = ", ".join(ds.column_names)
        raise UserError(
            f"{path} has no {', '.join(missing)} column for {method} (columns: {have}); "
            f"export it with `agentmill export --format trl-{method}`"
        )
    if len(ds) == 0:
        raise UserError(f"{path} holds no records; nothing to train on")
    return ds


def choose_template(tok: Any) -> str:
    """Which chat template trains (see the module docstring); sets ours on `tok` if needed."""
    from trl.chat_template_utils import get_training_chat_template

    from agentmill.rollout.protocol import load_template

    if tok.chat_template:
        try:
            patched = get_training_chat_template(tok)
        except ValueError:
            patched = False
        if patched is None:
            return "the model's own"
        if patched:
            return "the model's own, patched by TRL"
    tok.chat_template = load_template()
    return OUR_TEMPLATE


class _LogFile:
    """A TrainerCallback appending each log to train_log.jsonl (a killed run keeps its log)."""

    def __init__(self, path: Path):
        from transformers import TrainerCallback

        log_path = path

        class Callback(TrainerCallback):
            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any):
                if logs:
                    line = {"step": state.global_step, "epoch": state.epoch, **logs}
                    with log_path.open("ab") as f:
                        f.write(orjson.dumps(line, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")

        self.callback = Callback()


def _trl_args(opts: TrainOptions, out: Path) -> Any:
    import torch

    common: dict[str, Any] = {
        "output_dir": str(out / "checkpoints"),
        "num_train_epochs": opts.epochs,
        "max_steps": opts.max_steps,
        "per_device_train_batch_size": opts.batch_size,
        "gradient_accumulation_steps": opts.grad_accum,
        "learning_rate": opts.lr,
        "seed": opts.seed,
        "logging_steps": 1,
        "activation_checkpointing": opts.checkpointing,
        "save_strategy": "steps" if opts.save_steps else "no",
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
    }
    if opts.save_steps:
        common |= {"save_steps": opts.save_steps, "save_total_limit": 2}
    if opts.group_by_length:
        common["train_sampling_strategy"] = "group_by_length"
    if opts.method == "sft":
        from trl import SFTConfig

        return SFTConfig(assistant_only_loss=True, max_length=opts.max_length, **common)
    if opts.method == "dpo":
        from trl import DPOConfig

        return DPOConfig(beta=opts.beta, max_length=opts.max_length, **common)
    from trl import GRPOConfig

    # each optimizer step generates num_generations completions per prompt: the batch must
    # hold whole groups
    k = opts.num_generations
    common["per_device_train_batch_size"] = -(-opts.batch_size // k) * k
    return GRPOConfig(
        beta=opts.beta,
        num_generations=k,
        max_completion_length=opts.max_completion_length,
        max_tool_calling_iterations=opts.max_tool_rounds if opts.tools else None,
        **common,
    )


def grpo_tools(specs: list[str], tok: Any) -> list[Any]:
    """Our tools as the callables `GRPOTrainer(tools=...)` runs, and a tool-call parser set on
    `tok` when its template is ours (whose `<tool_call>` JSON blocks in ChatML turns are the
    ones TRL's Qwen3 response template parses); other templates are left to TRL."""
    import copy

    from agentmill.integrations.trl import tool_callable
    from agentmill.rollout.configs import FunctionToolConfig
    from agentmill.rollout.protocol import load_template
    from agentmill.rollout.tools import TOOLS, build_tools

    configs: list[Any] = []
    for spec in specs:
        if spec in TOOLS and spec != "function":
            from agentmill.config import RolloutConfig

            configs += RolloutConfig(tools=[spec]).tools
        elif ":" in spec or "." in spec:
            configs.append(FunctionToolConfig(path=spec))
        else:
            known = ", ".join(t for t in TOOLS if t != "function")
            raise UserError(
                f"--tool {spec!r}: not a tool type ({known}) nor a module:function path"
            )
    tools = build_tools(configs)
    if tok.chat_template == load_template():
        from trl.chat_template_utils import qwen3_schema, qwen3_template

        if hasattr(tok, "response_template"):
            tok.response_template = copy.deepcopy(qwen3_template)
        else:  # transformers before 5.13 only knows the legacy schema
            tok.response_schema = copy.deepcopy(qwen3_schema)
    return [tool_callable(t) for t in tools.values()]


def _trainer(opts: TrainOptions, model_dir: Path, tok: Any, data: Any, out: Path) -> Any:
    peft_config = None
    if opts.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=opts.lora_r,
            lora_alpha=opts.lora_alpha,
            lora_dropout=opts.lora_dropout,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "args": _trl_args(opts, out),
        "train_dataset": data,
        "processing_class": tok,
        "peft_config": peft_config,
        "callbacks": [_LogFile(out / "train_log.jsonl").callback],
    }
    if opts.method == "sft":
        from trl import SFTTrainer

        from agentmill.train.prefix import sft_trainer_class

        return (sft_trainer_class() if opts.prefix_sharing else SFTTrainer)(**kwargs)
    if opts.method == "dpo":
        from trl import DPOTrainer

        return DPOTrainer(**kwargs)
    from trl import GRPOTrainer

    from agentmill.integrations.trl import reward_func

    try:
        funcs = [reward_func(name) for name in opts.rewards]
    except ValueError as e:
        raise UserError(f"--reward: {e}") from None
    if opts.tools:
        kwargs["tools"] = grpo_tools(opts.tools, tok)
    try:
        return GRPOTrainer(reward_funcs=funcs, **kwargs)
    except ValueError as e:
        if opts.tools and "response schema" in str(e):
            raise UserError(
                "GRPO with --tool needs a chat template TRL can parse tool calls from (Qwen, "
                "Llama 3, ... or agentmill's tool template); this model's is neither"
            ) from None
        raise


def _latest_checkpoint(out: Path) -> str | None:
    found = sorted(
        (p for p in (out / "checkpoints").glob("checkpoint-*") if p.is_dir()),
        key=lambda p: int(p.name.rsplit("-", 1)[-1]),
    )
    return str(found[-1]) if found else None


def _save(trainer: Any, tok: Any, opts: TrainOptions, out: Path) -> dict[str, str]:
    """Model files into `out` through a staging folder, so a kill mid-save leaves no
    half-written model where a loader would take it for whole."""
    staging = out / ".saving"
    shutil.rmtree(staging, ignore_errors=True)
    written: dict[str, str] = {}
    model = trainer.model
    if opts.lora:
        adapter = out / "adapter"
        shutil.rmtree(adapter, ignore_errors=True)
        model.save_pretrained(str(adapter))
        tok.save_pretrained(str(adapter))
        written["adapter"] = str(adapter)
        if opts.merge:
            model = model.merge_and_unload()
    if not opts.lora or opts.merge:
        model.save_pretrained(str(staging))
        tok.save_pretrained(str(staging))
        for f in staging.iterdir():
            os.replace(f, out / f.name)
        written["model"] = str(out)
    shutil.rmtree(staging, ignore_errors=True)
    return written


def train(data: Path, model: str, out: Path, opts: TrainOptions) -> dict[str, Any]:
    """Train `model` on the export `data` into `out`; returns what train.json holds."""
    from agentmill.models import resolve_model

    model_dir = resolve_model(model)
    ds = load_data(data, opts.method)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    template = choose_template(tok)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.json").unlink(missing_ok=True)  # present only once this job has finished
    resume = _latest_checkpoint(out) if opts.save_steps else None
    if resume is None:
        (out / "train_log.jsonl").unlink(missing_ok=True)
    start = time.time()
    trainer = _trainer(opts, model_dir, tok, ds, out)
    trainer.train(resume_from_checkpoint=resume)
    written = _save(trainer, tok, opts, out)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    summary = {
        "method": opts.method,
        "base_model": str(model_dir),
        "data": str(data),
        "data_sha256": data_sha256(data),
        "records": len(ds),
        "options": opts.model_dump(mode="json"),
        "learning_rate": opts.lr,
        "chat_template": template,
        "steps": trainer.state.global_step,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "resumed_from": resume,
        # prefix tokens run once for the batch instead of once per row (SFT prefix sharing)
        "prefix_tokens_shared": getattr(trainer, "prefix_tokens_shared", 0),
        "seconds": round(time.time() - start, 2),
        "versions": _versions(),
        **written,
    }
    write_atomic(out / "train.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in ("trl", "transformers", "peft", "torch", "datasets")}
