"""The shared-prefix attention of the local engine against plain attention over the whole
`prefix | suffix` keys (tensors only; the model-level equality is in test_local_backend.py)."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch")

from agentmill.backends import shared_prefix  # noqa: E402

B, HEADS, KV_HEADS, DIM, P = 3, 6, 2, 8, 7


def reference(q, pk, pv, k, v, visible):
    """Softmax attention of `q` over `prefix | suffix` (the prefix expanded to every row, kv
    heads repeated), `visible` (b, 1, q, P+S) booleans."""
    g = HEADS // KV_HEADS
    keys = torch.cat([pk.expand(B, -1, -1, -1), k], dim=2).repeat_interleave(g, dim=1)
    values = torch.cat([pv.expand(B, -1, -1, -1), v], dim=2).repeat_interleave(g, dim=1)
    out = torch.nn.functional.scaled_dot_product_attention(q, keys, values, attn_mask=visible)
    return out.transpose(1, 2)


def run(q, pk, pv, k, v, mask):
    layer = shared_prefix.SharedPrefixLayer(pk, pv, capacity=4)
    layer.update(k, v)
    cache = types.SimpleNamespace(layers=[layer])
    module = types.SimpleNamespace(layer_idx=0)
    with shared_prefix.active(cache):
        out, _ = shared_prefix.attention(module, q, layer.keys, layer.values, mask)
    return out, layer


@pytest.mark.parametrize("q_len", [5, 1])
def test_shared_prefix_attention_equals_attention_over_the_whole_keys(q_len: int) -> None:
    gen = torch.Generator().manual_seed(0)
    s = 5
    pk, pv = (torch.randn(1, KV_HEADS, P, DIM, generator=gen) for _ in range(2))
    k, v = (torch.randn(B, KV_HEADS, s, DIM, generator=gen) for _ in range(2))
    q = torch.randn(B, HEADS, q_len, DIM, generator=gen)
    # causal over the suffix; row 1 has two padding columns at the start of its suffix
    causal = torch.arange(s)[None, :] <= torch.arange(s - q_len, s)[:, None]
    own = causal.expand(B, 1, q_len, s).clone()
    own[1, :, :, :2] = False
    visible = torch.cat([torch.ones(B, 1, q_len, P, dtype=torch.bool), own], dim=-1)
    want = reference(q, pk, pv, k, v, visible)
    got, layer = run(q, pk, pv, k, v, visible)
    assert got.shape == (B, q_len, HEADS, DIM)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # the same mask as additive floats (0 where seen), as eager masks come
    additive = torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)
    torch.testing.assert_close(run(q, pk, pv, k, v, additive)[0], want, rtol=1e-5, atol=1e-5)
    # no mask: plain causal attention (every key seen when one query decodes)
    plain = torch.cat(
        [torch.ones(B, 1, q_len, P, dtype=torch.bool), causal.expand(B, 1, -1, -1)], -1
    )
    torch.testing.assert_close(
        run(q, pk, pv, k, v, None)[0], reference(q, pk, pv, k, v, plain), rtol=1e-5, atol=1e-5
    )
    assert layer.get_seq_length() == P + s and layer.get_mask_sizes(1) == (P + s + 1, 0)


def test_the_layer_appends_in_place_and_grows_past_its_capacity() -> None:
    pk = pv = torch.zeros(1, KV_HEADS, P, DIM)
    layer = shared_prefix.SharedPrefixLayer(pk, pv, capacity=3)
    steps = [torch.full((B, KV_HEADS, n, DIM), float(i)) for i, n in enumerate([2, 1, 1, 1])]
    for x in steps:
        keys, values = layer.update(x, x + 100)
    assert keys.shape == (B, KV_HEADS, 5, DIM) and layer.get_seq_length() == P + 5
    assert keys[0, 0, :, 0].tolist() == [0, 0, 1, 2, 3]
    assert values[0, 0, :, 0].tolist() == [100, 100, 101, 102, 103]


def test_without_an_active_cache_it_is_plain_sdpa() -> None:
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(B, HEADS, 4, DIM, generator=gen)
    k, v = (torch.randn(B, KV_HEADS, 4, DIM, generator=gen) for _ in range(2))
    module = types.SimpleNamespace(
        layer_idx=0, num_key_value_groups=HEADS // KV_HEADS, is_causal=True
    )
    out, _ = shared_prefix.attention(module, q, k, v, None, scaling=DIM**-0.5)
    g = HEADS // KV_HEADS
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=True
    ).transpose(1, 2)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_selecting_rows_keeps_their_tokens_and_later_updates_append_after_them() -> None:
    pk = pv = torch.zeros(1, KV_HEADS, P, DIM)
    layer = shared_prefix.SharedPrefixLayer(pk, pv, capacity=8)
    rows = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1)
    layer.update(rows.expand(B, KV_HEADS, 2, DIM), -rows.expand(B, KV_HEADS, 2, DIM))
    layer.batch_select_indices(torch.tensor([0, 2]))  # row 1 finished
    keys, values = layer.update(
        torch.full((2, KV_HEADS, 1, DIM), 9.0), torch.zeros(2, KV_HEADS, 1, DIM)
    )
    assert keys.shape == (2, KV_HEADS, 3, DIM) and layer.get_seq_length() == P + 3
    assert keys[:, 0, :, 0].tolist() == [[0, 0, 9], [2, 2, 9]]
    assert values[:, 0, :2, 0].tolist() == [[0, 0], [-2, -2]]


def test_picker_draws_from_the_tempered_top_p_nucleus() -> None:
    from agentmill.backends.local_engine import picker

    torch.manual_seed(0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().expand(20_000, -1)
    # top_p 0.9: the first three hold 0.95 (the third is kept: 0.8 < 0.9 before it), the last
    # is cut; the kept ones are drawn in proportion to their probabilities
    drawn = picker(1.0, 0.9)(logits)
    freq = torch.bincount(drawn, minlength=4).float() / len(drawn)
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0]) / 0.95, atol=0.015, rtol=0)
    # temperature 0.5 squares and renormalises; top_k 2 keeps the two largest
    freq = torch.bincount(picker(0.5, 1.0, top_k=2)(logits), minlength=4).float() / 20_000
    sq = torch.tensor([0.25, 0.09, 0, 0])
    torch.testing.assert_close(freq, sq / sq.sum(), atol=0.015, rtol=0)
    # a nucleus smaller than the top token still keeps it; temperature 0 is the argmax
    assert set(picker(1.0, 0.1)(logits).tolist()) == {0}
    assert picker(0.0, 1.0)(torch.tensor([[0.1, 2.0, -1.0]])).tolist() == [1]
