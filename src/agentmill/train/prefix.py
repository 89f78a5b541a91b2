"""Prefix sharing for SFT: the rows of a batch that start with the same tokens (the system
prompt and tool definitions that every trajectory of a run carries) run that prefix once.

A flywheel round's SFT rows all open with the same system prompt and tool schemas, about 440
of each row's ~480 tokens for the calculator flywheel, so most of a training step's compute is
the same prefix, computed again for every row. Here the prefix runs once (batch 1, keeping its
keys and values, with gradients), its cache is repeated to the batch, and only the rows'
suffixes run on top of it. Attention is causal, so the prefix's activations do not depend on
what follows: the loss and the gradients are those of the plain forward (the backward sums
the rows' gradients into the shared prefix), to float rounding; tests/test_train_prefix.py
checks both on a tiny model.

It applies to a batch when all of these hold, else the batch takes TRL's own path:
- at least two rows, and a common prefix of at least `MIN_PREFIX` tokens, unpadded in every
  row, in which no position is trained (labels -100, also for the first token after it:
  assistant-only loss never trains a system or tool-definition token);
- the batch holds only `input_ids`, `attention_mask` and `labels` (no padding-free packing);
- no activation checkpointing (the cache and recomputation do not mix), one process (not
  tested under DDP or FSDP), and the model is a decoder whose backbone takes
  `past_key_values` (Llama, Qwen, SmolLM2, Mistral, ...).
"""

from __future__ import annotations

from typing import Any

MIN_PREFIX = 16
KEYS = {"input_ids", "attention_mask", "labels"}


def shared_prefix_len(input_ids: Any, attention_mask: Any, labels: Any) -> int:
    """The number of leading tokens the batch's rows can share: equal in every row, real
    (mask 1) and untrained (label -100, and so is the label of the token after them).
    At least one token of every row stays outside it."""
    import torch

    same = (input_ids == input_ids[:1]).all(0) & attention_mask.bool().all(0)
    untrained = (labels == -100).all(0)
    # the fused LM head predicts label t from position t - 1: a prefix position t is shared
    # when its token is and label t + 1 is untrained (the last prefix position's prediction
    # is never computed), so at least one token of every row stays outside the prefix
    ok = same[:-1] & untrained[1:]
    return int(torch.cumprod(ok.int(), 0).sum())


def _backbone(model: Any) -> Any:
    """The decoder under the LM head (through PEFT's wrapper: its LoRA layers are in it)."""
    core = model.get_base_model() if hasattr(model, "get_base_model") else model
    return core.base_model


def sft_trainer_class() -> type:
    """TRL's SFTTrainer, with prefix sharing in `compute_loss` (see the module docstring)."""
    from trl import SFTTrainer

    class PrefixSharingSFTTrainer(SFTTrainer):
        prefix_tokens_shared = 0  # prefix tokens not recomputed, over the run (train.json)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = self._split(model, inputs) or inputs
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        def _split(self, model: Any, inputs: dict[str, Any]) -> dict[str, Any] | None:
            if (
                not model.training
                or set(inputs) - {"use_cache"} != KEYS
                or self.args.activation_checkpointing
                or self.accelerator.num_processes > 1  # untested under DDP / FSDP
            ):
                return None
            ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
            rows = ids.shape[0]
            p = shared_prefix_len(ids, mask, labels) if rows > 1 else 0
            if p < MIN_PREFIX:
                return None
            out = _backbone(self.accelerator.unwrap_model(model))(
                input_ids=ids[:1, :p], attention_mask=mask[:1, :p], use_cache=True
            )
            cache = out.past_key_values
            cache.batch_repeat_interleave(rows)
            self.prefix_tokens_shared += p * (rows - 1)
            return {
                "input_ids": ids[:, p:],
                # the whole mask: the suffix attends to the prefix; TRL counts tokens with it
                "attention_mask": mask,
                "labels": labels[:, p:],
                "past_key_values": cache,
            }

    return PrefixSharingSFTTrainer
