"""The synchronous half of the `local` backend: a loaded tokenizer and model, and one
padded `generate` over a group of prompts that share their generation settings.

Prompts with tools (or with tool calls and results in their history) are rendered with the
text tool protocol's template (`rollout/protocol.py`), others with the model's own template.
A group may be constrained: then each row has its own compiled call grammar
(`backends/constrained.py`) that masks its logits (`RowGrammars` on the shared-prefix path,
xgrammar's HF logits processor in `generate`).

Shared prefix: the prompts of a group usually share a long token prefix (system prompt, tools,
few-shot turns), and prefill dominates short completions. When they share at least
`PREFIX_MIN_TOKENS` tokens, the prefix is encoded once at batch size 1 (or taken from a small
LRU of earlier prefixes, `PrefixCache`) and `generate` encodes only each row's suffix. On
`sdpa` models the prefix then stays at batch size 1 for the whole `generate`
(`shared_prefix`: each decoding step reads it once, not once per row); other attentions get
it expanded to every row. Rows are laid out `prefix | padding | suffix` with the padding
masked out; `generate` derives position ids from the mask's cumulative sum, so each row's
tokens keep the positions they would have without padding.

Across agent steps: on the shared-prefix path each finished row's own states go to a
`RowCache` (`backends/row_cache.py`), and a later row that extends one (the next step of the
same conversation) starts from them: its suffix is laid out `padding | reused | padding |
new`, and only the new tokens are encoded.

Everything here runs in the backend's single worker thread (grammar compiling aside, which is
locked); `backends/local.py` owns the queue and the batching."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmill.backends.constrained import GrammarCache, RowGrammars, logits_processor
from agentmill.backends.row_cache import RowCache
from agentmill.config import LocalBackendConfig
from agentmill.errors import UserError
from agentmill.records import Message, content_hash
from agentmill.rollout import protocol

# (temperature, top_p, max_tokens, stop): requests that share these share a generate call.
GroupKey = tuple[float, float, int, tuple[str, ...]]
# Per layer, the (keys, values) of one encoded prefix, batch size 1.
PrefixKV = tuple[tuple[Any, Any], ...]

# A shorter shared prefix saves too little prefill to pay for the cache copy.
PREFIX_MIN_TOKENS = 32
# The LRU of encoded prefixes: at most this many entries and tokens (SmolLM2-135M: ~46 KB a
# token in float32, so the token bound keeps it under ~400 MB even for long prompts).
PREFIX_CACHE_ENTRIES = 4
PREFIX_CACHE_TOKENS = 8192


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


def prefix_families(ids: list[list[int]]) -> list[list[int]]:
    """The rows (indices) split into families that each share a long token prefix: one family
    when the whole batch shares at least half of its shortest row; else the rows sorted by
    their tokens, cut wherever two neighbours share less than half of the shorter one (or
    fewer than `PREFIX_MIN_TOKENS`); the rows that share nothing long with another row are
    one family of their own. Each family lists its rows in input order.

    >>> a, b = [1] * 40, [2] * 40
    >>> prefix_families([a + [3], a + [4], b + [5], a + [3], b + [6], [7]])
    [[0, 1, 3], [2, 4], [5]]
    >>> prefix_families([a + [3], b + [4], [5]]), prefix_families([a + [3], a + [4]])
    ([[0, 1, 2]], [[0, 1]])
    """

    def shared(a: list[int], b: list[int]) -> int:
        return len(os.path.commonprefix([a, b]))

    def long(n: int, shortest: int) -> bool:
        return n >= PREFIX_MIN_TOKENS and 2 * n >= shortest

    everyone = list(range(len(ids)))
    # the lexicographically first and last rows share the least: the batch's common prefix
    if len(ids) < 2 or long(shared(min(ids), max(ids)), min(map(len, ids))):
        return [everyone]
    order = sorted(everyone, key=lambda i: ids[i])
    families: list[list[int]] = [[order[0]]]
    for prev, i in zip(order, order[1:], strict=False):
        a_, b_ = ids[prev], ids[i]
        if long(shared(a_, b_), min(len(a_), len(b_))):
            families[-1].append(i)
        else:
            families.append([i])
    # rows that share nothing long with any other row go together, as they would have anyway
    rest = sorted(i for f in families if len(f) == 1 for i in f)
    kept = [sorted(f) for f in families if len(f) > 1] + ([rest] if rest else [])
    return sorted(kept, key=lambda f: f[0]) if len(kept) > 1 else [everyone]


def picker(temperature: float, top_p: float, top_k: int = 0) -> Callable[[Any], Any]:
    """The next tokens from the last logits `(rows, vocab)`: greedy at temperature 0, else
    a draw from the tempered distribution cut to `top_k` and to the top-p nucleus, as
    `generate` samples (inverse-CDF over the sorted probabilities: one uniform per row,
    where `torch.multinomial` draws an exponential per vocabulary entry)."""
    import torch

    if temperature <= 0:
        return lambda logits: logits.argmax(-1)

    def pick(logits: Any) -> Any:
        scores = logits.float() / temperature
        if 0 < top_k < scores.shape[-1]:
            kth = torch.topk(scores, top_k, dim=-1).values[:, -1:]
            scores = scores.masked_fill(scores < kth, float("-inf"))
        probs, order = scores.softmax(-1).sort(-1, descending=True)
        if top_p < 1.0:  # keep the tokens whose more likely predecessors hold < top_p
            probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
        cum = probs.cumsum(-1)
        u = torch.rand((cum.shape[0], 1), device=cum.device) * cum[:, -1:]
        index = torch.searchsorted(cum, u, right=True).clamp_(max=cum.shape[-1] - 1)
        return order.gather(-1, index).squeeze(-1)

    return pick


class Engine:
    """A loaded tokenizer and model; every method here is synchronous and thread-bound."""

    # transformers' own annotations do not type-check cleanly through the Auto classes.
    tok: Any
    lm: Any

    def __init__(self, path: Path, cfg: LocalBackendConfig, prefix_cache: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from agentmill.backends import shared_prefix

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
        # None when the model cannot take a shared prefix (see `PrefixCache.supports`).
        self.prefixes = PrefixCache(self.lm) if PrefixCache.supports(self.lm) else None
        # With `sdpa` attention the prefix is kept once for the whole batch, not per row
        # (`shared_prefix`); other attentions get it expanded to every row.
        self.shared_attention = self.prefixes is not None and shared_prefix.register(self.lm)
        # Finished rows' own states, for the agent's next step (shared-prefix path only).
        self.rows = (
            RowCache(cfg.kv_reuse_mb << 20)
            if self.shared_attention and cfg.kv_reuse_mb > 0
            else None
        )
        # Whether `generate` reuses a shared prefix; tests turn it off to compare outputs.
        self.use_prefix_cache = prefix_cache
        # Whether finished rows leave a shared-prefix batch (`shared_prefix.decode`) instead
        # of running in HF `generate` until the longest row ends; bench/shared_prefix.py
        # turns it off to compare.
        self.early_exit = True
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
        """Generate for `prompts`, all sharing the settings in `key`; with `grammars` (one
        compiled grammar per prompt), each row is constrained by its own. Rows whose prompts
        fork early (say, prompts with the tool block and prompts without it) are run as one
        padded `generate` per family of shared prefix (`prefix_families`), so each family
        keeps its own long prefix instead of the batch sharing almost none."""
        ids: list[list[int]] = self.tok(prompts, add_special_tokens=False)["input_ids"]
        families = prefix_families(ids) if self._prefix_on() else [list(range(len(ids)))]
        out: list[RowOutput | None] = [None] * len(ids)
        for rows in families:
            sub = grammars and [grammars[i] for i in rows]
            rows_out = self._generate([ids[i] for i in rows], key, seeds, sub)
            for i, row in zip(rows, rows_out, strict=True):
                out[i] = row
        return [r for r in out if r is not None]

    def _generate(
        self, ids: list[list[int]], key: GroupKey, seeds: list[int], grammars: list[Any] | None
    ) -> list[RowOutput]:
        """One padded `generate` over token rows."""
        import torch

        from agentmill.backends import shared_prefix

        kw = self._generate_kwargs(key)
        if grammars is not None:  # HF `generate`'s way; the shared-prefix path has its own
            kw["logits_processor"] = [logits_processor(grammars)]
        with torch.inference_mode(), self._seeded(seeds):
            shared = self._shared_prefix(ids)
            cache, reused = None, [0] * len(ids)
            if shared and self.prefixes is not None:
                kv = self.prefixes.get(tuple(ids[0][:shared]))
                if self.shared_attention:
                    # rows are reused only where finished rows are kept: the decoding loop
                    rows = self.rows if self.early_exit else None
                    hits = rows.take(ids, shared) if rows is not None else []
                    reused = [hit[0] if hit else 0 for hit in hits] or reused
                    own = _own_states(hits, max(reused)) if max(reused) else None
                    width = max(len(row) - shared - n for row, n in zip(ids, reused, strict=True))
                    capacity = max(reused) + width + key[2]
                    cache = shared_prefix.make_cache(kv, self.lm.config, capacity, own)
                    kw["past_key_values"] = cache
                else:
                    kw["past_key_values"] = self.prefixes.expanded(kv, len(ids))
            input_ids, mask = self._layout(ids, shared, reused)
            fed = shared + max(reused)  # the columns the cache already holds
            keep = self._keeper(ids, shared, cache)
            with shared_prefix.active(cache):
                if cache is not None and self.early_exit:
                    new = shared_prefix.decode(
                        self.lm,
                        input_ids[:, fed:],
                        mask,
                        cache,
                        picker(key[0], key[1], self.top_k),
                        key[2],
                        self.eos_ids | {self.tok.pad_token_id},
                        self._stop_check(key[3]),
                        keep,
                        RowGrammars(grammars) if grammars is not None else None,
                    )
                else:
                    out = self.lm.generate(input_ids=input_ids, attention_mask=mask, **kw)
                    new = out[:, input_ids.shape[1] :].tolist()
        return [self._row(row, len(p), key[3]) for row, p in zip(new, ids, strict=True)]

    def _keeper(
        self, ids: list[list[int]], shared: int, cache: Any
    ) -> Callable[[int, int, Any, list[int]], None] | None:
        """What stores a finished row's states in the row cache (None when rows are not kept:
        no row cache, or not on the shared-prefix decoding path)."""
        rows = self.rows
        if rows is None or cache is None or not self.early_exit:
            return None

        from agentmill.backends import shared_prefix

        def keep(row: int, b: int, mask: Any, fed: list[int]) -> None:
            columns = mask[shared:].nonzero().squeeze(-1)
            tokens = ids[row] + fed
            if len(columns) == len(tokens) - shared:  # else the layout is not what we think
                rows.put(tokens, shared, shared_prefix.row_states(cache, b, columns))

        return keep

    def _stop_check(self, stop: tuple[str, ...]) -> Callable[[list[int]], bool] | None:
        """Whether a row's new tokens hold a stop string (None without stop strings)."""
        if not stop:
            return None
        tok = self.tok
        return lambda row: any(s in tok.decode(row, skip_special_tokens=True) for s in stop if s)

    def _prefix_on(self) -> bool:
        return self.use_prefix_cache and self.prefixes is not None

    def _shared_prefix(self, ids: list[list[int]]) -> int:
        """How many leading tokens the rows share and `generate` should take from the prefix
        cache: 0 when off, unsupported or too short. Each row keeps at least one token of its
        own, as `generate` must encode something to produce the first logits."""
        if not self._prefix_on():
            return 0
        n = min(len(os.path.commonprefix(ids)), min(len(row) for row in ids) - 1)
        return n if n >= PREFIX_MIN_TOKENS else 0

    def _layout(
        self, ids: list[list[int]], shared: int, reused: list[int] | None = None
    ) -> tuple[Any, Any]:
        """Input ids and attention mask, each row `prefix | padding | suffix`: with `shared`
        = 0 plain left padding. The padding sits after the prefix so the prefix columns line
        up across rows, as the expanded prefix cache requires. With `reused` (per row, how
        many tokens after the prefix come from the row cache), the suffix is two blocks,
        `padding | reused` and `padding | the rest`, each as wide as its longest row, as the
        cache holds the reused ones (`_own_states`)."""
        import torch

        reused = reused or [0] * len(ids)
        cached = max(reused)
        width = max(len(row) - shared - n for row, n in zip(ids, reused, strict=True))
        pad = self.tok.pad_token_id
        rows, masks = [], []
        for row, n in zip(ids, reused, strict=True):
            a, b = cached - n, width - (len(row) - shared - n)
            mid = shared + n
            rows.append(row[:shared] + [pad] * a + row[shared:mid] + [pad] * b + row[mid:])
            masks.append([1] * shared + [0] * a + [1] * n + [0] * b + [1] * (len(row) - mid))
        device = self.lm.device
        return torch.tensor(rows, device=device), torch.tensor(masks, device=device)

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


def _own_states(hits: list[Any], width: int) -> tuple[tuple[Any, Any], ...]:
    """Per layer, the rows' reused states (`RowCache.take`) laid out as the cache's first
    `width` own columns, `(rows, kv_heads, width, dim)`, each row right-aligned after zeros
    (padding columns are masked out; zeros, unlike `empty`, never hold a NaN that a masked
    score would still multiply)."""
    states = next(hit[1] for hit in hits if hit)
    out = []
    for layer, (k0, v0) in enumerate(states):
        keys = k0.new_zeros((len(hits), k0.shape[0], width, k0.shape[-1]))
        values = v0.new_zeros((len(hits), v0.shape[0], width, v0.shape[-1]))
        for b, hit in enumerate(hits):
            if hit:
                k, v = hit[1][layer]
                keys[b, :, width - k.shape[1] :] = k
                values[b, :, width - v.shape[1] :] = v
        out.append((keys, values))
    return tuple(out)


class PrefixCache:
    """An LRU of encoded prompt prefixes (batch size 1), keyed by their token ids.

    `get` returns the states of exactly the asked prefix, encoding only what the closest stored
    entry lacks; `expanded` gives `generate` a fresh cache over a batch. Stored tensors are
    never handed to `generate`: a `DynamicCache` takes in states by concatenation, which
    copies, so `generate` extends tensors of its own and the entries stay as encoded."""

    def __init__(
        self,
        lm: Any,
        max_entries: int = PREFIX_CACHE_ENTRIES,
        max_tokens: int = PREFIX_CACHE_TOKENS,
    ):
        self.lm = lm
        self.max_entries = max_entries
        self.max_tokens = max_tokens
        self.entries: dict[tuple[int, ...], PrefixKV] = {}  # oldest first
        self.stats: dict[str, int] = dict.fromkeys(("hits", "encoded_tokens"), 0)

    @staticmethod
    def supports(lm: Any) -> bool:
        """True for a decoder-only model on the default cache whose layers all grow by
        concatenation (no sliding window) and whose forward takes the position ids that
        `generate` derives from the attention mask: the `prefix | padding | suffix` layout
        needs both."""
        import inspect

        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        # A configured cache implementation would clash with the cache passed to `generate`.
        if lm.config.is_encoder_decoder or lm.generation_config.cache_implementation:
            return False
        params = inspect.signature(lm.forward).parameters
        if "position_ids" not in params or "logits_to_keep" not in params:
            return False
        layers = DynamicCache(config=lm.config).layers
        return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)

    def get(self, ids: tuple[int, ...]) -> PrefixKV:
        """The states of the prefix `ids`, from the LRU or encoded (and then stored)."""
        if ids in self.entries:
            self.stats["hits"] += 1
            self.entries[ids] = self.entries.pop(ids)  # most recently used last
            return self.entries[ids]
        base, n = self._closest(ids)
        kv = self._encode(ids[n:], base)
        self._store(ids, kv)
        return kv

    def _closest(self, ids: tuple[int, ...]) -> tuple[PrefixKV | None, int]:
        """The stored states sharing the longest head with `ids` (at least
        `PREFIX_MIN_TOKENS`), cut to that head (views, no copy), and its length."""
        best, n = None, 0
        for key, kv in self.entries.items():
            common = len(os.path.commonprefix([key, ids]))
            if common > n:
                best, n = kv, common
        if best is None or n < PREFIX_MIN_TOKENS:
            return None, 0
        n = min(n, len(ids) - 1)  # leave a token to encode, so the forward below has input
        return tuple((k[:, :, :n], v[:, :, :n]) for k, v in best), n

    def _encode(self, new_ids: tuple[int, ...], base: PrefixKV | None) -> PrefixKV:
        """Run `new_ids` (batch size 1) on top of `base`; without a mask, the model numbers
        the positions on from the cache length, which is right for an unpadded row."""
        import torch
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=base, config=self.lm.config)
        input_ids = torch.tensor([new_ids], device=self.lm.device)
        # One logit row: the prefix's logits are never used, only its keys and values.
        self.lm(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        self.stats["encoded_tokens"] += len(new_ids)
        return tuple((layer.keys, layer.values) for layer in cache.layers)

    def _store(self, ids: tuple[int, ...], kv: PrefixKV) -> None:
        self.entries[ids] = kv
        while len(self.entries) > 1 and (
            len(self.entries) > self.max_entries
            or sum(len(k) for k in self.entries) > self.max_tokens
        ):
            del self.entries[next(iter(self.entries))]

    def expanded(self, kv: PrefixKV, batch: int) -> Any:
        """A new `DynamicCache` holding `kv` for each of `batch` rows: the views expanded here
        are copied into the cache's own tensors as it takes them in."""
        from transformers import DynamicCache

        rows = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in kv]
        return DynamicCache(ddp_cache_data=rows, config=self.lm.config)
