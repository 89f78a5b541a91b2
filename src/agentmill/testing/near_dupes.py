"""Planted near-duplicates for dedup tests and the dedup benchmark (generated data, not real text).

>>> import random
>>> rng = random.Random(0)
>>> words = [f"w{rng.randrange(1000)}" for _ in range(200)]
>>> jaccard(words, variant(rng, words, [f"w{i}" for i in range(1000)], near=True)) >= 0.8
True
"""

from __future__ import annotations

import random


def shingles(words: list[str], k: int = 3) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}


def jaccard(a: list[str], b: list[str]) -> float:
    """Exact Jaccard similarity of the two word lists' 3-word shingles."""
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


def mutate(rng: random.Random, words: list[str], vocab: list[str], edits: int) -> list[str]:
    """Substitute, insert or delete `edits` random words."""
    out = list(words)
    for _ in range(edits):
        pos, op = rng.randrange(len(out)), rng.choice("sid")
        if op == "s":
            out[pos] = rng.choice(vocab)
        elif op == "i":
            out.insert(pos, rng.choice(vocab))
        else:
            del out[pos]
    return out


def variant(rng: random.Random, words: list[str], vocab: list[str], near: bool) -> list[str]:
    """A copy with Jaccard >= 0.8 (`near`) or < 0.5 with `words`, checked exactly."""
    while True:
        out = mutate(rng, words, vocab, rng.randint(1, 6) if near else 40)
        sim = jaccard(words, out)
        if (near and sim >= 0.8) or (not near and sim < 0.5):
            return out
