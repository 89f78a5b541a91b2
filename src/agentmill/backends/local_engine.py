"""The synchronous half of the `local` backend: a loaded tokenizer and model, and one
left-padded `generate` over a group of prompts that share their generation settings.

Prompts with tools (or with tool calls and results in their history) are rendered with the
text tool protocol's template (`rollout/protocol.py`), others with the model's own template.
A group may be constrained: then each row has its own compiled call grammar
(`backends/constrained.py`), and xgrammar's logits processor masks each row by its own.

Everything here runs in the backend's single worker thread (grammar compiling aside, which is
locked); `backends/local.py` owns the queue and the batching."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmill.backends.constrained import GrammarCache, logits_processor
from agentmill.config import LocalBackendConfig
from agentmill.errors import UserError
from agentmill.records import Message, content_hash
from agentmill.rollout import protocol

# (temperature, top_p, max_tokens, stop): requests that share these share a generate call.
GroupKey = tuple[float, float, int, tuple[str, ...]]


@dataclass
class RowOutput:
    """One row of a batched generate, decoded."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


template_message = protocol.template_message


def uses_tool_protocol(messages: list[Message], tools: list[dict[str, Any]] | None) -> bool:
    """True when the prompt needs the tool protocol's template: tools are offered, or the
    history holds calls or results (a template without tool support would drop them)."""
    return bool(tools) or any(m.role == "tool" or m.tool_calls for m in messages)


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str | None:
    """`text` up to the earliest stop string, or None when no stop string occurs."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(hits)] if hits else None


def combined_seed(seeds: list[int]) -> int:
    """One seed for a batch: the request's own seed when all agree, else a hash of them all."""
    if len(set(seeds)) == 1:
        return seeds[0]
    return int(content_hash(sorted(seeds)), 16) % (2**63)


class Engine:
    """A loaded tokenizer and model; every method here is synchronous and thread-bound."""

    # transformers' own annotations do not type-check cleanly through the Auto classes.
    tok: Any
    lm: Any

    def __init__(self, path: Path, cfg: LocalBackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
        try:
            self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
            self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype))
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"cannot load local model from {path}: {first}; "
                "check that the folder holds a causal LM with its tokenizer"
            ) from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm.to(cfg.device).eval()
        self.eos_ids = self._eos_ids()
        self.top_k = getattr(self.lm.generation_config, "top_k", None) or 0
        self.grammars = GrammarCache(self.tok, self.lm.config.vocab_size)
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny generate: the weights may be memory-mapped, so the first forward pass
        reads them all from disk; better here than inside the first timed request."""
        prompt = self.render([Message(role="user", content="Hi")], None)
        self.generate([prompt], (0.0, 1.0, 1, ()), [])

    def _eos_ids(self) -> set[int]:
        eos = self.lm.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tok.eos_token_id is not None:
            ids.add(self.tok.eos_token_id)
        return ids

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text, ending with the assistant header: the tool protocol's template
        when `uses_tool_protocol`, else the model's own chat template."""
        if uses_tool_protocol(messages, tools):
            return protocol.render(messages, tools)
        text: str = self.tok.apply_chat_template(
            [template_message(m) for m in messages],
            tools=tools or None,
            add_generation_prompt=True,
            tokenize=False,
        )
        return text

    def generate(
        self,
        prompts: list[str],
        key: GroupKey,
        seeds: list[int],
        grammars: list[Any] | None = None,
    ) -> list[RowOutput]:
        """One left-padded `generate` over `prompts`, all sharing the settings in `key`;
        with `grammars` (one compiled grammar per prompt), each row is constrained by its own."""
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.lm.device)
        kw = self._generate_kwargs(key)
        if grammars is not None:
            kw["logits_processor"] = [logits_processor(grammars)]
        with torch.inference_mode(), self._seeded(seeds):
            out = self.lm.generate(**enc, **kw)
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        return [self._row(ids, n, key[3]) for ids, n in zip(new, prompt_lens, strict=True)]

    def _generate_kwargs(self, key: GroupKey) -> dict[str, Any]:
        temperature, top_p, max_tokens, stop = key
        kw: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "pad_token_id": self.tok.pad_token_id,
            "use_cache": True,
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, top_k=self.top_k)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tok)
        return kw

    @contextlib.contextmanager
    def _seeded(self, seeds: list[int]) -> Iterator[None]:
        """Seed the global RNG for one generate, restoring its state afterwards."""
        if not seeds:
            yield
            return
        import torch

        device = self.lm.device
        devices = [] if device.type == "cpu" else [device.index or 0]
        with torch.random.fork_rng(devices=devices, device_type=device.type):
            torch.manual_seed(combined_seed(seeds))
            yield

    def _row(self, ids: list[int], prompt_tokens: int, stop: tuple[str, ...]) -> RowOutput:
        """Decode one row. The pad may equal EOS (SmolLM2), so a row that a stop string ended
        looks like one that ended with EOS a token later: the stop string in the text tells."""
        ends = self.eos_ids | {self.tok.pad_token_id}
        end = next((i for i, t in enumerate(ids) if t in ends), len(ids))
        text: str = self.tok.decode(ids[:end], skip_special_tokens=True)
        cut = cut_at_stop(text, stop)
        if cut is not None:
            return RowOutput(cut, "stop", int(prompt_tokens), end)
        if end < len(ids):
            return RowOutput(text, "stop", int(prompt_tokens), end + (ids[end] in self.eos_ids))
        return RowOutput(text, "length", int(prompt_tokens), end)
