"""Attention over a prompt prefix that every row of a batch shares, stored once.

The rows of a rollout batch share a long prefix (system prompt, tool block, few-shot turns).
Expanding its keys and values to every row (what a plain `DynamicCache` needs) makes each
decoding step read the prefix once per row, and `DynamicCache` copies the whole cache at every
step as it grows by concatenation: on a CPU, with a 1,000-token prefix and 16 rows, that memory
traffic costs more than the model's weights do.

Here the prefix stays at batch size 1 and each row's own tokens go to a preallocated buffer
(`SharedPrefixLayer`); the attention function registered as `ATTENTION` scores each query
against the one prefix and against its row's suffix, and takes a single softmax over both, so
the result is exact attention over `prefix | suffix`, only computed without the copies.

The layout is the one `local_engine` gives `generate`: `prefix | padding | suffix` per row, the
padding masked out; the mask `generate` builds covers prefix and suffix columns, and every row
sees the whole prefix. Outside a shared-prefix `generate` (no active cache on this thread), the
function is plain `sdpa`.

`decode` is the sampling loop of that path: unlike HF `generate`, it drops a row (and its cache
rows) from the batch as soon as the row is done."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from transformers.cache_utils import DynamicLayer

ATTENTION = "agentmill_shared_prefix"

_active = threading.local()  # .cache: the SharedPrefixCache of the running generate, or None


def register(lm: Any) -> bool:
    """Switch `lm` to the shared-prefix attention when it runs on `sdpa` (the function falls
    back to `sdpa` itself); False, and `lm` untouched, for any other attention."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    if lm.config._attn_implementation not in ("sdpa", ATTENTION):
        return False
    AttentionInterface.register(ATTENTION, attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    lm.set_attn_implementation(ATTENTION)
    return True


def make_cache(
    prefix: tuple[tuple[Any, Any], ...],
    config: Any,
    capacity: int,
    own: tuple[tuple[Any, Any], ...] | None = None,
) -> Any:
    """A `DynamicCache` whose layers hold `prefix` (per layer, keys and values at batch size
    1) once and room for `capacity` tokens of each row's own; `own` (per layer, `(rows,
    kv_heads, C, dim)`) are rows' first own tokens already encoded (`row_cache`), which the
    cache starts with, as if they had been fed."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [
        SharedPrefixLayer(k, v, capacity, *(own[i] if own else ()))
        for i, (k, v) in enumerate(prefix)
    ]
    return cache


def row_states(cache: Any, row: int, columns: Any) -> tuple[tuple[Any, Any], ...]:
    """Per layer, copies of batch row `row`'s own keys and values at `columns` (indices into
    its own tokens), `(kv_heads, len(columns), dim)`: what `row_cache` keeps of a row."""
    return tuple(
        (layer.keys[row].index_select(1, columns), layer.values[row].index_select(1, columns))
        for layer in cache.layers
    )


@contextmanager
def active(cache: Any) -> Iterator[None]:
    """Make `cache` the one the attention function reads prefixes from, on this thread."""
    _active.cache = cache
    try:
        yield
    finally:
        _active.cache = None


class SharedPrefixLayer(DynamicLayer):  # type: ignore[misc]
    """One layer's cache: the shared prefix (batch 1) and the rows' own tokens, appended in
    place into a buffer (grown by doubling when `capacity` runs out). Lengths and mask sizes
    count the prefix, so `generate` numbers positions as if the prefix were in every row."""

    def __init__(
        self,
        keys: Any,
        values: Any,
        capacity: int,
        own_keys: Any = None,
        own_values: Any = None,
    ):
        super().__init__()
        self.prefix = (keys, values)
        self.prefix_len = int(keys.shape[-2])
        self.capacity = capacity
        self._buf: tuple[Any, Any] | None = None
        self._len = 0
        if own_keys is not None and own_keys.shape[-2]:  # rows' tokens encoded before
            self.lazy_initialization(own_keys, own_values)
            self._buf = (own_keys, own_values)
            self._len = int(own_keys.shape[-2])
            self.keys, self.values = own_keys, own_values

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> Any:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        old, new = self._len, self._len + key_states.shape[-2]
        buf = self._buf
        if buf is None or new > buf[0].shape[-2] or buf[0].shape[0] != key_states.shape[0]:
            size = max(new, self.capacity, 2 * (buf[0].shape[-2] if buf is not None else 0))
            b, h, _, d = key_states.shape
            grown = (
                key_states.new_empty((b, h, size, d)),
                value_states.new_empty((b, h, size, value_states.shape[-1])),
            )
            if buf is not None and old:
                grown[0][:, :, :old] = buf[0][:, :, :old]
                grown[1][:, :, :old] = buf[1][:, :, :old]
            buf = self._buf = grown
        buf[0][:, :, old:new] = key_states
        buf[1][:, :, old:new] = value_states
        self._len = new
        self.keys, self.values = buf[0][:, :, :new], buf[1][:, :, :new]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.prefix_len + self._len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0

    def crop(self, tokens_to_remove: int) -> None:  # pragma: no cover - not used by sampling
        raise NotImplementedError("a shared-prefix cache cannot be cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:  # pragma: no cover
        raise NotImplementedError("a shared-prefix cache cannot be expanded")

    def batch_select_indices(self, indices: Any) -> None:
        """Keep only the rows at `indices` (finished rows leave the batch; `decode`)."""
        if self._buf is not None:
            self._buf = (self._buf[0][indices], self._buf[1][indices])
            self.keys = self._buf[0][:, :, : self._len]
            self.values = self._buf[1][:, :, : self._len]


def attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Exact softmax attention of each row's queries over the shared prefix and its own
    keys; `sdpa` when no shared-prefix cache is active. Returns `(batch, q, heads, dim)`."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cache = getattr(_active, "cache", None)
    if cache is None:
        return sdpa_attention_forward(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    pk, pv = cache.layers[module.layer_idx].prefix  # (1, kv_heads, P, dim)
    b, heads, q, dim = query.shape
    kv_heads, p, s = key.shape[1], pk.shape[-2], key.shape[-2]
    g = heads // kv_heads  # query heads per kv head: head h reads kv head h // g
    scale = scaling if scaling is not None else dim**-0.5
    # (b, kv_heads, g*q, dim): the queries of one kv head's group together
    qg = query.reshape(b, kv_heads, g * q, dim)
    # prefix scores, one matmul per kv head over every row's queries: (kv_heads, b*g*q, P)
    qp = qg.transpose(0, 1).reshape(kv_heads, b * g * q, dim)
    sp = torch.matmul(qp, pk[0].transpose(-1, -2)).view(kv_heads, b, g * q, p).transpose(0, 1)
    ss = torch.matmul(qg, key.transpose(-1, -2))  # (b, kv_heads, g*q, S)
    scores = torch.cat([sp, ss], dim=-1).mul_(scale)
    visible = _suffix_mask(attention_mask, b, q, p, s, query.device)
    if visible is not None:  # (b, 1, q, S) -> (b, 1, g*q, S), group-major like qg
        visible = visible.unsqueeze(2).expand(b, 1, g, q, s).reshape(b, 1, g * q, s)
        scores[..., p:].masked_fill_(~visible, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    pp = probs[..., :p].transpose(0, 1).reshape(kv_heads, b * g * q, p)
    out = torch.matmul(pp, pv[0]).view(kv_heads, b, g * q, dim).transpose(0, 1)
    out = out + torch.matmul(probs[..., p:], value)
    return out.reshape(b, heads, q, dim).transpose(1, 2).contiguous(), None


def _suffix_mask(mask: Any, b: int, q: int, p: int, s: int, device: Any) -> Any:
    """Which of the row's own S keys each query sees, `(b, 1, q, S)` booleans; None when it
    sees them all. The mask `generate` built covers `P + S` columns (booleans or additive
    floats); None from it means plain causal attention over the `P + S` positions."""
    import torch

    if mask is None:
        if q == 1:
            return None
        # query i sits at suffix position S - q + i and sees the suffix keys up to it
        keys = torch.arange(s, device=device)
        queries = torch.arange(s - q, s, device=device)
        return (keys[None, :] <= queries[:, None]).expand(b, 1, q, s)
    mask = mask[..., -s:]
    if mask.dtype != torch.bool:
        mask = mask == 0
    return mask.expand(b, 1, q, s)


def decode(
    lm: Any,
    input_ids: Any,
    mask: Any,
    cache: Any,
    pick: Callable[[Any], Any],
    max_tokens: int,
    ends: set[int],
    stopped: Callable[[list[int]], bool] | None = None,
    finished_row: Callable[[int, int, Any, list[int]], None] | None = None,
    grammars: Any = None,
) -> list[list[int]]:
    """Generate up to `max_tokens` new tokens per row, each row's `input_ids` (the uncached
    part of `prefix | padding | suffix`, the prefix in `cache`) under the 2-D `mask` (prefix
    columns included); `pick` turns the last logits `(rows, vocab)` into the next tokens.

    A row leaves the batch once it is done: it picked an id in `ends` (kept as its last
    token), `stopped(row)` says a stop string has appeared, or `max_tokens` is reached. Its
    cache rows go too, so the steps after it cost what the rows still running need. (HF's
    `generate` runs every row until the last one ends, which in rollout batches wastes half of
    the decoding: one rambling row keeps fifteen finished ones computing.) Returns each row's
    new tokens, in input order. `finished_row(row, b, mask, fed)`, when given, sees each row
    as it finishes, while the cache still holds it at batch row `b`: `mask` is its mask row
    (prefix columns, then one per own column in the cache) and `fed` its new tokens that went
    through the model (all but the last). `grammars` (a `constrained.RowGrammars`) constrains
    each row by its own grammar. Only for a `SharedPrefixLayer` cache under `active`."""
    import torch

    rows = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(rows)]
    live = list(range(rows))  # the input row of each batch row
    position = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)[:, -input_ids.shape[1] :]
    step_ids = input_ids
    end_ids = torch.tensor(sorted(ends), device=input_ids.device)
    for step in range(max_tokens):
        logits = lm(
            input_ids=step_ids,
            attention_mask=mask,
            position_ids=position,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        ).logits[:, -1, :]
        if grammars is not None:
            logits = grammars.mask(logits, live)
        chosen = pick(logits)
        finished = torch.isin(chosen, end_ids).tolist()
        tokens = chosen.tolist()
        if grammars is not None:
            grammars.accept(live, tokens)
        for b, (row, token) in enumerate(zip(live, tokens, strict=True)):
            out[row].append(token)
            if stopped is not None and not finished[b] and stopped(out[row]):
                finished[b] = True
        last = step + 1 == max_tokens or all(finished)
        if finished_row is not None:
            for b, row in enumerate(live):
                if last or finished[b]:
                    finished_row(row, b, mask[b], out[row][:-1])
        if last:
            break
        if any(finished):
            keep = [b for b, done in enumerate(finished) if not done]
            index = torch.tensor(keep, device=input_ids.device)
            cache.batch_select_indices(index)
            live = [live[b] for b in keep]
            chosen, mask, position = chosen[index], mask[index], position[index]
        step_ids = chosen[:, None]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        position = position[:, -1:] + 1
    return out
