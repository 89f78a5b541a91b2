"""The local engine's row cache: finished rows' states found again by their tokens (lookup and
memory rules on small tensors; the model-level equality is in test_local_backend.py)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from agentmill.backends import row_cache  # noqa: E402
from agentmill.backends.row_cache import BLOCK, RowCache  # noqa: E402

LAYERS, HEADS, DIM = 2, 3, 4


def states(tokens: list[int], start: int) -> tuple[tuple[object, object], ...]:
    """Per layer, keys that name their token (k[h, i, :] = token id) and values = -keys."""
    own = torch.tensor(tokens[start:], dtype=torch.float32)
    k = own[None, :, None].expand(HEADS, -1, DIM).clone()
    return tuple((k + layer, -(k + layer)) for layer in range(LAYERS))


def row(*parts: range | list[int]) -> list[int]:
    return [t for part in parts for t in part]


def test_a_row_gets_the_states_of_its_longest_stored_prefix_past_the_shared_one() -> None:
    cache = RowCache(max_bytes=1 << 20)
    short = row(range(100), range(1000, 1020))  # 100 shared tokens, then its own
    longer = row(range(100), range(1000, 1050))
    for tokens in (short, longer):
        cache.put(tokens, 100, states(tokens, 100))
    # the next step: the longer row's tokens, a different reply after 45 of its own, more
    new = row(range(100), range(1000, 1045), [7, 7, 7], range(50))
    ((n, got),) = cache.take([new], shared=100)
    assert n == 45
    for layer, (k, v) in enumerate(got):
        assert k.shape == (HEADS, 45, DIM)
        assert k[0, :, 0].tolist() == [t + layer for t in range(1000, 1045)]
        assert v.equal(-k)
    assert list(cache.entries) == [0]  # the one used is gone, the other kept
    assert cache.stats["hits"] == 1 and cache.stats["reused_tokens"] == 45


def test_reuse_starts_at_the_batch_prefix_and_leaves_one_token_to_encode() -> None:
    cache = RowCache(max_bytes=1 << 20)
    stored = list(range(200))
    cache.put(stored, 40, states(stored, 40))
    # a batch whose shared prefix is longer than the stored row's: its states start later
    (hit,) = cache.take([list(range(150))], shared=64)
    assert hit is not None
    n, got = hit
    assert n == 150 - 1 - 64  # the whole row but its last token
    assert got[0][0][0, :, 0].tolist() == list(range(64, 149))


def test_a_row_stored_on_a_longer_prefix_than_the_batchs_is_not_used() -> None:
    """Its states lack the columns between the two prefixes."""
    cache = RowCache(max_bytes=1 << 20)
    stored = list(range(120))
    cache.put(stored, 80, states(stored, 80))
    assert cache.take([list(range(110))], shared=48) == [None]
    assert cache.stats["misses"] == 1 and len(cache.entries) == 1


def test_no_match_past_the_shared_prefix_is_a_miss() -> None:
    cache = RowCache(max_bytes=1 << 20)
    stored = row(range(64), range(500, 540))
    cache.put(stored, 64, states(stored, 64))
    # shares only the prefix, then differs at once
    assert cache.take([row(range(64), range(900, 940))], shared=64) == [None]
    # shares less than a block past the prefix: not found (block granularity)
    assert cache.take([row(range(64), range(500, 500 + BLOCK - 1), [1] * 20)], shared=64) == [None]


def test_two_rows_of_one_batch_may_share_a_stored_row() -> None:
    cache = RowCache(max_bytes=1 << 20)
    stored = list(range(100))
    cache.put(stored, 32, states(stored, 32))
    hits = cache.take([list(range(90)), row(range(80), [5] * 10)], shared=32)
    assert [hit and hit[0] for hit in hits] == [57, 48]
    assert not cache.entries and not cache.index


def test_memory_is_bounded_and_the_oldest_rows_go_first() -> None:
    tokens = [list(range(i * 1000, i * 1000 + 64)) for i in range(4)]
    one = sum(k.nbytes + v.nbytes for k, v in states(tokens[0], 0))
    cache = RowCache(max_bytes=2 * one)
    for t in tokens:
        cache.put(t, 0, states(t, 0))
    assert len(cache.entries) == 2 and cache.nbytes == 2 * one
    assert cache.stats["evicted"] == 2
    assert [h is not None for h in cache.take(tokens, shared=0)] == [False, False, True, True]
    # a row larger than the whole budget is not kept
    small = RowCache(max_bytes=one - 1)
    small.put(tokens[0], 0, states(tokens[0], 0))
    assert not small.entries


def test_a_hash_collision_is_caught_by_comparing_the_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(row_cache, "block_hashes", lambda tokens: [0] * (len(tokens) // BLOCK))
    cache = RowCache(max_bytes=1 << 20)
    stored = list(range(64))
    cache.put(stored, 0, states(stored, 0))
    assert cache.take([list(range(100, 164))], shared=0) == [None]
    (hit,) = cache.take([list(range(40))], shared=0)
    assert hit is not None and hit[0] == 39
