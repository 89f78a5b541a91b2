"""Real TRL trainers (1.16, CPU) on our exports: SFTTrainer with `assistant_only_loss=True` and
our tool template, and DPOTrainer, each run two optimizer steps on a tiny random-weight Llama.

The trajectories (parallel calls, a tool error, multi-turn) go through `agentmill export`, a
JSONL file and `datasets.load_dataset("json")`, as a user's would. Checked: the loss is
finite, no record is dropped, every record is seen once (the trainer's token count), the token
ids TRL trains on are those of our rendering of the record as exported (so the Arrow round
trip changed nothing), and TRL's loss mask is exactly the assistant turns found by our own
span search."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import agent_trajectories, dpo_samples

from agentmill.export.template_check import assistant_spans, renderer

pytest_plugins = ["trainer_fixtures"]  # tool_tokenizer, tiny_llama
pytestmark = [
    pytest.mark.model,  # the embedded model's tokenizer
    pytest.mark.slow,  # ~20 s each on 2 CPU cores
    # TRL 1.16 still calls transformers' old gradient-checkpointing names
    pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning"),
]

TRAIN_ARGS: dict[str, Any] = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "eval_strategy": "no",
    "report_to": "none",
    "use_cpu": True,
    "seed": 0,
}


Cli = Callable[..., tuple[int, str, str]]


def export(cli: Cli, tmp_path: Path, trajectories: list[Any], fmt: str) -> tuple[Path, dict]:
    """`agentmill export` of the trajectories; (the file, its records by id)."""
    src, out = tmp_path / "trajectories.jsonl", tmp_path / f"{fmt}.jsonl"
    src.write_bytes(b"".join(t.to_json() + b"\n" for t in trajectories))
    code, _, err = cli("export", src, "--format", fmt, "--out", out)
    assert code == 0, err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return out, {r["id"]: r for r in records}


def load_json_dataset(path: Path) -> Any:
    from datasets import load_dataset

    return load_dataset("json", data_files=str(path), split="train")


def ids_and_mask(
    tok: Any, messages: list[dict[str, Any]], tools: Any, start: int = 0
) -> tuple[list[int], list[bool]]:
    """Token ids of our rendering of `messages`, and which tokens lie in an assistant turn
    from message `start` on (span search: what each assistant message adds to the rendering
    of the messages before it)."""
    render = renderer(tok, tok.chat_template, (messages, tools, {}))
    text = render(messages, False)
    spans = assistant_spans(render, messages)
    assert spans is not None and len(spans) == sum(m["role"] == "assistant" for m in messages)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    turns = [span for k, span in spans.items() if k >= start]
    inside = [any(s <= a and b <= e for s, e in turns) for a, b in enc["offset_mapping"]]
    return enc["input_ids"], inside


def finite_losses(trainer: Any) -> list[float]:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 2 and len(losses) == 2
    assert all(math.isfinite(x) for x in losses), losses
    return losses


def tokens_seen(trainer: Any) -> float:
    return max(h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h)


def test_sft_trainer_assistant_only_loss(
    tiny_llama: Path, tool_tokenizer: Any, cli: Cli, tmp_path: Path
) -> None:
    from trl import SFTConfig, SFTTrainer

    path, records = export(cli, tmp_path, agent_trajectories(), "trl-sft")
    assert len(records) == 3
    args = SFTConfig(
        output_dir=str(tmp_path / "out"), assistant_only_loss=True, max_length=1024, **TRAIN_ARGS
    )
    trainer = SFTTrainer(
        model=str(tiny_llama),
        args=args,
        train_dataset=load_json_dataset(path),
        processing_class=tool_tokenizer,
    )
    rows = list(trainer.train_dataset)
    assert sorted(row["id"] for row in rows) == sorted(records)  # none dropped
    for row in rows:
        rec = records[row["id"]]
        ids, inside = ids_and_mask(tool_tokenizer, rec["messages"], rec["tools"])
        assert row["input_ids"] == ids  # what we exported, untouched by the Arrow round trip
        assert [label != -100 for label in row["labels"]] == inside, row["id"]
        trained = tool_tokenizer.decode([t for t, m in zip(ids, inside, strict=True) if m])
        assert rec["messages"][-1]["content"] in trained and "<|im_end|>" in trained
        assert "<tool_response>" not in trained and "<|im_start|>" not in trained
    trainer.train()
    finite_losses(trainer)
    assert tokens_seen(trainer) == sum(len(row["input_ids"]) for row in rows)  # each once


def test_dpo_trainer(tiny_llama: Path, tool_tokenizer: Any, cli: Cli, tmp_path: Path) -> None:
    from trl import DPOConfig, DPOTrainer

    path, pairs = export(cli, tmp_path, dpo_samples(), "trl-dpo")
    assert len(pairs) == 3
    assert any(m.get("tool_calls") for p in pairs.values() for m in p["rejected"])
    args = DPOConfig(output_dir=str(tmp_path / "out"), max_length=1024, **TRAIN_ARGS)
    trainer = DPOTrainer(
        model=str(tiny_llama),
        args=args,
        train_dataset=load_json_dataset(path),
        processing_class=tool_tokenizer,
    )
    rows = list(trainer.train_dataset)
    assert sorted(row["id"] for row in rows) == sorted(pairs)  # none dropped
    seen = 0
    for row in rows:
        pair = pairs[row["id"]]
        for side in ("chosen", "rejected"):
            messages, k = pair["prompt"] + pair[side], len(pair["prompt"])
            ids, inside = ids_and_mask(tool_tokenizer, messages, pair["tools"], start=k)
            assert row["prompt_ids"] + row[f"{side}_ids"] == ids, (row["id"], side)
            # the completion starts exactly where its first assistant turn does
            assert len(row["prompt_ids"]) == inside.index(True), (row["id"], side)
            seen += len(ids)
    trainer.train()
    finite_losses(trainer)
    assert tokens_seen(trainer) == seen  # each pair once: prompt + chosen, prompt + rejected
