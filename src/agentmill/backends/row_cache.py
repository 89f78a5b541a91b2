"""Each finished row's own keys and values, kept until the agent's next step reuses them.

An agent step's prompt is the previous step's prompt, the reply the model just generated, the
tool results and a new assistant header. Without this cache every step encodes the row's whole
conversation again: in the calc eval a second-step row has ~90 tokens of its own beyond the
shared system prompt and tool block, of which ~70 were encoded (or generated) one step before,
and the second step's batches are almost all prefill. vLLM and SGLang keep such states as
automatic prefix caching; this is that for the local engine's shared-prefix layout.

What is stored: for a row that ran on top of a shared prefix of `start` tokens, its tokens
(prompt and the generated tokens that were fed back, i.e. all but the last one) and, per layer,
the keys and values of `tokens[start:]` at batch size 1, `(kv_heads, n, dim)`; the positions
are baked into the keys (RoPE), and a row's positions never depend on the batch it ran in.

Lookup: `take` finds, for each row of a new batch, the stored row with the longest common token
prefix beyond the batch's shared prefix (whole blocks of `BLOCK` tokens through a hash index,
then token by token), and hands out views of its states; each row keeps at least one token to
encode. A row that was reused is dropped after the batch: the new row, once finished, holds
everything it held. Memory is bounded by `max_bytes`, the oldest rows going first.

>>> cache = RowCache(max_bytes=1 << 20)
>>> cache.put(list(range(40)), 20, ())   # a row of 40 tokens that ran on a 20-token prefix
>>> [hit and hit[0] for hit in cache.take([list(range(36)) + [99], [7] * 40], shared=20)]
[16, None]
>>> len(cache.entries), cache.stats["reused_tokens"]
(0, 16)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Tokens per hashed block: lookups find the longest shared run of whole blocks, then extend it
# token by token (a common prefix shorter than one block past the shared prefix is not found).
BLOCK = 16

# Per layer, the (keys, values) of a row's own tokens: `(kv_heads, tokens, dim)`.
RowStates = tuple[tuple[Any, Any], ...]


@dataclass
class _Row:
    tokens: tuple[int, ...]
    start: int  # the states cover tokens[start:]
    states: RowStates
    nbytes: int
    hashes: list[int]  # the index keys this row registered


def block_hashes(tokens: Sequence[int]) -> list[int]:
    """`h[j]` identifies `tokens[: (j + 1) * BLOCK]` (chained over whole blocks)."""
    out, h = [], 0
    for i in range(0, len(tokens) - BLOCK + 1, BLOCK):
        h = hash((h, tuple(tokens[i : i + BLOCK])))
        out.append(h)
    return out


class RowCache:
    """Finished rows' states by their tokens (see the module doc); single-threaded."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: dict[int, _Row] = {}  # oldest first
        self.index: dict[int, int] = {}  # block hash -> the entry that registered it last
        self.nbytes = 0
        self._next = 0
        self.stats: dict[str, int] = dict.fromkeys(
            ("stored", "hits", "misses", "reused_tokens", "evicted"), 0
        )

    def put(self, tokens: Sequence[int], start: int, states: RowStates) -> None:
        """Keep `states` (the keys and values of `tokens[start:]`) for a later step."""
        nbytes = sum(k.nbytes + v.nbytes for k, v in states)
        if nbytes > self.max_bytes:
            return
        key, self._next = self._next, self._next + 1
        # only the blocks that end past `start` can lead to this row's own states
        hashes = block_hashes(tokens)[start // BLOCK :]
        self.entries[key] = _Row(tuple(tokens), start, states, nbytes, hashes)
        for h in hashes:
            self.index[h] = key
        self.nbytes += nbytes
        self.stats["stored"] += 1
        while self.nbytes > self.max_bytes:
            self._drop(next(iter(self.entries)))
            self.stats["evicted"] += 1

    def take(
        self, rows: Sequence[Sequence[int]], shared: int
    ) -> list[tuple[int, RowStates] | None]:
        """For each row (token ids) of a batch whose first `shared` tokens come from the prefix
        cache: `(n, states)`, the states of `row[shared : shared + n]` from a stored row, or
        None. `n` leaves the row at least one token to encode. The stored rows used are
        dropped afterwards."""
        out: list[tuple[int, RowStates] | None] = []
        used: set[int] = set()
        for row in rows:
            found = self._find(row, shared)
            if found is None:
                self.stats["misses"] += 1
                out.append(None)
                continue
            key, n = found
            entry = self.entries[key]
            a, b = shared - entry.start, shared - entry.start + n
            out.append((n, tuple((k[:, a:b], v[:, a:b]) for k, v in entry.states)))
            used.add(key)
            self.stats["hits"] += 1
            self.stats["reused_tokens"] += n
        for key in used:
            self._drop(key)
        return out

    def _find(self, row: Sequence[int], shared: int) -> tuple[int, int] | None:
        """The stored row sharing the longest prefix with `row` past `shared`, and how many
        of `row`'s tokens after `shared` it covers (at most all but the last)."""
        hashes = block_hashes(row)
        for j in range(len(hashes) - 1, -1, -1):
            end = (j + 1) * BLOCK
            if end <= shared:
                return None
            key = self.index.get(hashes[j])
            entry = self.entries.get(key) if key is not None else None
            if entry is None or entry.start > shared:
                continue
            if entry.tokens[:end] != tuple(row[:end]):  # a hash collision
                continue
            common = end + len(os.path.commonprefix([entry.tokens[end:], tuple(row[end:])]))
            n = min(common, len(row) - 1) - shared
            return (key, n) if n > 0 else None
        return None

    def _drop(self, key: int) -> None:
        entry = self.entries.pop(key)
        self.nbytes -= entry.nbytes
        for h in entry.hashes:
            if self.index.get(h) == key:
                del self.index[h]

    def clear(self) -> None:
        self.entries.clear()
        self.index.clear()
        self.nbytes = 0
