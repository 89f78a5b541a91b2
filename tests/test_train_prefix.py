"""SFT prefix sharing (train/prefix.py): a batch's common, untrained prefix runs once, and the
loss and every gradient equal TRL's plain forward's on a tiny random Llama, full weights and
LoRA; `agentmill train` trains the same losses either way."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from agentmill.store import iter_jsonl

pytest_plugins = ["trainer_fixtures"]  # tiny_llama
pytestmark = [
    pytest.mark.model,  # the embedded model's tokenizer
    pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning"),
]

SYSTEM = "You answer questions. Call the calculator for arithmetic, then reply with the number."
CALC = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression exactly.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def _rows() -> list[dict]:
    """trl-sft rows sharing the system prompt and tools: calls, a multi-step one, no call."""
    rows = []
    for i, (a, b) in enumerate([(12, 7), (350, 125), (96, 8), (41, 3), (5, 60), (218, 46)]):
        call = {
            "id": f"c{i}",
            "type": "function",
            "function": {"name": "calculator", "arguments": {"expression": f"{a} * {b}"}},
        }
        messages = [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": f"A box holds {a} rows of {b}. How many in all?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": f"c{i}", "content": str(a * b)},
            {"role": "assistant", "content": str(a * b)},
        ]
        if i % 3 == 2:  # no call: a different length and shape
            messages = [messages[0], {"role": "user", "content": f"Ben is {a}. How old is Ben?"}]
            messages.append({"role": "assistant", "content": str(a)})
        rows.append({"messages": messages, "tools": [CALC]})
    return rows


def test_shared_prefix_len_stops_at_a_difference_padding_or_a_trained_token() -> None:
    import torch

    from agentmill.train.prefix import shared_prefix_len

    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 9, 9, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    labels = torch.full_like(ids, -100)
    assert shared_prefix_len(ids, mask, labels) == 3  # rows differ at position 3
    same = ids[:1].repeat(2, 1)
    assert shared_prefix_len(same, torch.ones_like(same), labels) == 5  # one token stays out
    assert shared_prefix_len(same, mask, labels) == 5  # the padded last token is outside
    left = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1]])
    assert shared_prefix_len(same, left, labels) == 0  # left padding: nothing shared
    trained = labels.clone()
    trained[:, 2] = 2  # token 2 is trained: predicted from position 1, which stays out
    assert shared_prefix_len(same, torch.ones_like(same), trained) == 1
    one_row = trained.clone()
    one_row[0, 2] = -100
    assert shared_prefix_len(same, torch.ones_like(same), one_row) == 1  # any row trains it


def _trainer(tiny_llama: Path, tmp_path: Path, lora: bool, rows: list[dict] | None = None, **kw):
    import datasets
    from transformers import AutoTokenizer

    from agentmill.train.trainer import TrainOptions, _trainer, choose_template

    opts = TrainOptions(
        method="sft",
        lora=lora,
        lora_dropout=0.0,  # the same noise on both paths
        batch_size=6,
        max_length=512,
        checkpointing=False,
        **kw,
    )
    tok = AutoTokenizer.from_pretrained(str(tiny_llama), local_files_only=True)
    choose_template(tok)
    ds = datasets.Dataset.from_list(rows or _rows())
    return _trainer(opts, tiny_llama, tok, ds, tmp_path / "out")


def test_group_by_length_batches_rows_of_similar_length(tiny_llama, tmp_path) -> None:
    """`--group-by-length`: every row is still drawn once an epoch, with less padding than
    the random order's (rows of three lengths, in batches of 6; transformers sorts groups of
    len // (4 * batch) batches, so the set must hold 48 rows or more to group at all)."""
    rows = [json.loads(json.dumps(r)) for _ in range(16) for r in _rows()]  # 96 rows
    for i, row in enumerate(rows):
        if i % 2:  # a longer question: three lengths in all
            row["messages"][1]["content"] += " Please think about it carefully first."

    def padding(grouped: bool) -> tuple[int, int]:
        trainer = _trainer(tiny_llama, tmp_path, False, rows, group_by_length=grouped)
        seen = pad = 0
        for batch in trainer.get_train_dataloader():
            seen += len(batch["input_ids"])
            pad += int((batch["attention_mask"] == 0).sum())
        return seen, pad

    (n_grouped, grouped), (n_random, random) = padding(True), padding(False)
    assert n_grouped == n_random == len(rows)
    assert grouped < random / 2


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_loss_and_gradients_equal_the_plain_forward(tiny_llama, tmp_path, lora) -> None:
    import torch
    from trl import SFTTrainer

    trainer = _trainer(tiny_llama, tmp_path, lora)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model
    model.train()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def grads(compute) -> tuple[float, dict[str, torch.Tensor]]:
        model.zero_grad()
        loss = compute(model, dict(batch))
        loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in params if p.grad is not None}

    plain_loss, plain = grads(lambda m, b: SFTTrainer.compute_loss(trainer, m, b))
    assert trainer.prefix_tokens_shared == 0
    shared_loss, shared = grads(trainer.compute_loss)
    # the system prompt and the tool schema, once for the batch instead of 6 times
    rows = batch["input_ids"].shape[0]
    assert rows == 6 and trainer.prefix_tokens_shared >= 40 * (rows - 1)
    assert shared_loss == pytest.approx(plain_loss, rel=1e-5)
    assert plain.keys() == shared.keys() and len(plain) == len(params)
    for name, g in plain.items():
        assert torch.allclose(shared[name], g, rtol=1e-4, atol=1e-6), name
    if lora:
        assert all("lora_" in n for n in plain)


def test_training_runs_the_same_losses_with_and_without_sharing(cli, tiny_llama, tmp_path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    losses = {}
    for flag in ("--prefix-sharing", "--no-prefix-sharing"):
        out = tmp_path / flag
        args = ["train", "sft", str(data), "--model", str(tiny_llama), "--out", str(out)]
        args += ["--full", "--max-steps", "3", "--batch-size", "3", "--no-checkpointing", flag]
        rc, stdout, err = cli(*args)
        assert rc == 0, stdout + err
        log = [orjson.loads(x) for _, x in iter_jsonl(out / "train_log.jsonl")]
        losses[flag] = [x["loss"] for x in log if "loss" in x]
        shared = orjson.loads((out / "train.json").read_bytes())["prefix_tokens_shared"]
        assert (shared > 0) == (flag == "--prefix-sharing")
    on, off = losses.values()
    assert len(on) == len(off) == 3 and on == pytest.approx(off, rel=1e-4)
