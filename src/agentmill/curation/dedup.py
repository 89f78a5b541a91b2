"""The dedup stage: exact and near-duplicate removal on one text field of each trajectory.

Exact duplicates share a normalized text (lowercase, punctuation stripped, whitespace
collapsed). Near duplicates share a word-shingle set with Jaccard similarity >= the threshold:
MinHash signatures (rensa's batch API over numpy shingle hashes; a numpy signature when rensa is
missing) are banded for LSH, and every candidate pair is checked with the exact Jaccard of the
two shingle sets, so an LSH false positive never drops a distinct record. Records are visited
best first (highest mean reward, then fewest steps, then shortest, then first seen), so the
member kept from each cluster is the best-scored one.

>>> from agentmill.records import Message, Trajectory
>>> def traj(i: str, q: str, r: float) -> Trajectory:
...     return Trajectory(id=i, task_id=i, messages=[Message(role="user", content=q)],
...                       rewards={"r": r})
>>> res = dedup([traj("a", "What is 2+2?", 0.0), traj("b", "what is  2 + 2", 1.0)],
...             DedupConfig(field="query"))
>>> [t.id for t in res.kept], [(t.id, why, k) for t, why, k in res.dropped]
(['b'], [('a', 'exact_duplicate', 'b')])
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import orjson

from agentmill.curation.dedup_config import DedupConfig, DedupField
from agentmill.records import Trajectory

if TYPE_CHECKING:
    import numpy as np

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
_MASK64 = (1 << 64) - 1


@dataclass
class DedupResult:
    """Kept records, and each dropped one with its reason and the id of the record kept."""

    kept: list[Trajectory] = field(default_factory=list)
    dropped: list[tuple[Trajectory, str, str]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Drops per reason.

        >>> DedupResult().counts
        {}
        """
        out: dict[str, int] = {}
        for _, why, _ in self.dropped:
            out[why] = out.get(why, 0) + 1
        return out


def normalize(text: str) -> str:
    """Lowercase, punctuation removed, whitespace collapsed.

    >>> normalize("  Hello,   WORLD!\\n")
    'hello world'
    """
    return _SPACE.sub(" ", _PUNCT.sub(" ", text.lower())).strip()


def trajectory_query(t: Trajectory) -> str:
    """The last user message before the first assistant turn.

    >>> from agentmill.records import Message
    >>> trajectory_query(Trajectory(id="a", task_id="t", messages=[
    ...     Message(role="user", content="q1"), Message(role="user", content="q2"),
    ...     Message(role="assistant", content="x"), Message(role="user", content="q3")]))
    'q2'
    """
    query = ""
    for m in t.messages:
        if m.role == "assistant":
            break
        if m.role == "user":
            query = m.text
    return query


def trajectory_text(t: Trajectory) -> str:
    """Every message's text and the JSON of every tool call, one line each.

    >>> from agentmill.records import Message
    >>> trajectory_text(Trajectory(id="a", task_id="t", messages=[
    ...     Message(role="user", content="hi"), Message(role="assistant", content="yo")]))
    'hi\\nyo'
    """
    parts: list[str] = []
    for m in t.messages:
        if m.text:
            parts.append(m.text)
        for c in m.tool_calls or []:
            parts.append(orjson.dumps(c.function.to_dict(), option=orjson.OPT_SORT_KEYS).decode())
    return "\n".join(parts)


def field_text(t: Trajectory, name: DedupField) -> str:
    """The text of `t` that dedup compares: "query", "answer" or "text".

    >>> field_text(Trajectory(id="a", task_id="t", messages=[], final_answer="42"), "answer")
    '42'
    """
    if name == "query":
        return trajectory_query(t)
    if name == "answer":
        return t.final_answer or ""
    return trajectory_text(t)


def mean_reward(t: Trajectory) -> float | None:
    """The mean of the trajectory's rewards, or None when it has none.

    >>> mean_reward(Trajectory(id="a", task_id="t", messages=[], rewards={"x": 1, "y": 0}))
    0.5
    """
    return sum(t.rewards.values()) / len(t.rewards) if t.rewards else None


def _steps(t: Trajectory) -> int:
    if t.agent is not None:
        return t.agent.steps
    return sum(1 for m in t.messages if m.role == "assistant")


def rank_key(t: Trajectory, text: str, index: int) -> tuple[float, int, int, int]:
    """Sort key, best first: highest mean reward, fewest steps, shortest text, first seen.

    >>> t = Trajectory(id="a", task_id="t", messages=[], rewards={"x": 1.0})
    >>> rank_key(t, "abc", 7)
    (-1.0, 0, 3, 7)
    """
    reward = mean_reward(t)
    return (math.inf if reward is None else -reward, _steps(t), len(text), index)


def dedup(records: list[Trajectory], cfg: DedupConfig) -> DedupResult:
    """Drop exact then near duplicates of `cfg.field`, keeping the best-scored of each cluster.

    Records whose field is empty are always kept. Kept records stay in input order.

    >>> from agentmill.records import Message
    >>> answers = ["the cat sat on the mat today", "The cat sat on the mat today!",
    ...            "a different answer entirely here"]
    >>> ts = [Trajectory(id=str(i), task_id="t", messages=[], final_answer=a)
    ...       for i, a in enumerate(answers)]
    >>> [t.id for t in dedup(ts, DedupConfig(field="answer")).kept]
    ['0', '2']
    """
    texts = [normalize(field_text(t, cfg.field)) for t in records]
    order = sorted(range(len(records)), key=lambda i: rank_key(records[i], texts[i], i))
    drops: dict[int, tuple[str, int]] = {}
    if cfg.exact:
        drops.update(_exact_drops(texts, order))
    if cfg.near:
        live = [i for i in order if i not in drops and texts[i]]
        drops.update(_near_drops([texts[i] for i in live], live, cfg))
    kept = [t for i, t in enumerate(records) if i not in drops]
    dropped = [(records[i], why, records[k].id) for i, (why, k) in sorted(drops.items())]
    return DedupResult(kept=kept, dropped=dropped)


def _exact_drops(texts: list[str], order: list[int]) -> dict[int, tuple[str, int]]:
    first: dict[bytes, int] = {}
    drops: dict[int, tuple[str, int]] = {}
    for i in order:
        if not texts[i]:
            continue
        digest = hashlib.blake2b(texts[i].encode(), digest_size=16).digest()
        if digest in first:
            drops[i] = ("exact_duplicate", first[digest])
        else:
            first[digest] = i
    return drops


def _near_drops(texts: list[str], ids: list[int], cfg: DedupConfig) -> dict[int, tuple[str, int]]:
    """Near-duplicate drops among `texts` (normalized, best first); `ids` maps back to records."""
    if len(texts) < 2:
        return {}
    hashes, offsets, sig = _sketch(texts, cfg)
    bands, rows = lsh_bands(cfg.num_perm, cfg.threshold, cfg.lsh_recall)
    buckets = _buckets(sig, bands, rows, cfg.seed)
    local = _greedy(buckets, len(texts), _ShingleSets(hashes, offsets), cfg.threshold)
    return {ids[i]: ("near_duplicate", ids[k]) for i, k in local.items()}


def _sketch(texts: list[str], cfg: DedupConfig, chunk: int = 4096) -> tuple[Any, Any, Any]:
    """Shingle hashes (flat), their row offsets and MinHash signatures, a chunk at a time so
    that only one chunk's words and temporaries are alive at once."""
    import numpy as np

    vocab: dict[str, int] = {"": 0}
    parts, offs, sigs = [], [np.zeros(1, dtype=np.uint64)], []
    for lo in range(0, len(texts), chunk):
        docs = [t.split() for t in texts[lo : lo + chunk]]
        hashes, offsets = shingle_hashes(docs, cfg.shingle_size, cfg.seed, vocab)
        sigs.append(signatures(hashes, offsets, cfg.num_perm, cfg.seed))
        offs.append(offsets[1:] + offs[-1][-1])
        parts.append(hashes)
    return np.concatenate(parts), np.concatenate(offs), np.concatenate(sigs)


def shingle_hashes(
    docs: list[list[str]], k: int, seed: int = 0, vocab: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every word `k`-gram of each doc, flat, with row offsets (len + 1).

    A doc shorter than `k` words (but not empty) gets one shingle: all its words. Pass the same
    `vocab` dict to hash several batches of docs consistently.

    >>> h, off = shingle_hashes([["a", "b", "c", "d"], ["a", "b"], ["b", "c", "d"]], 3)
    >>> off.tolist(), bool(h[1] == h[3])
    ([0, 2, 3, 4], True)
    """
    import numpy as np

    vocab = {"": 0} if vocab is None else vocab
    for w in dict.fromkeys(chain(*docs)):
        vocab.setdefault(w, len(vocab))
    ids: list[int] = []
    pad = [0] * (k - 1)
    for words in docs:
        ids.extend(map(vocab.__getitem__, words))
        ids.extend(pad)
    tokens = _mix(np.asarray(ids, dtype=np.uint64), seed)
    cnt = np.asarray([max(len(w) - k + 1, 1) if w else 0 for w in docs], dtype=np.int64)
    sizes = np.asarray([len(w) + k - 1 for w in docs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(cnt)]).astype(np.uint64)
    within = np.arange(int(cnt.sum())) - np.repeat(offsets[:-1].astype(np.int64), cnt)
    starts = np.repeat(np.cumsum(sizes) - sizes, cnt) + within
    return _combine(tokens, starts, k), offsets


def _mix(ids: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of word ids; id 0 (padding) stays 0."""
    import numpy as np

    x = ids + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) & _MASK64)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return np.where(ids == 0, np.uint64(0), x ^ (x >> np.uint64(31)))


def _combine(tokens: np.ndarray, starts: np.ndarray, k: int) -> np.ndarray:
    import numpy as np

    h = np.zeros(len(starts), dtype=np.uint64)
    mult = np.uint64(0x9E3779B97F4A7C15)
    for j in range(k):
        h = (h ^ tokens[starts + j]) * mult
        h ^= h >> np.uint64(29)
    return h


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """MinHash signatures, one uint32 row per doc: rensa's batch API, else numpy.

    >>> import numpy as np
    >>> sig = signatures(np.arange(1, 7, dtype=np.uint64), np.array([0, 3, 6], np.uint64), 16, 0)
    >>> sig.shape, sig.dtype.name
    ((2, 16), 'uint32')
    """
    import numpy as np

    try:
        import rensa
    except ImportError:
        return _numpy_signatures(hashes, offsets, num_perm, seed)
    matrix = rensa.RMinHash.digest_matrix_from_flat_token_hashes(hashes, offsets, num_perm, seed)
    return np.asarray(matrix.to_rows(), dtype=np.uint32).reshape(-1, num_perm)


def _numpy_signatures(
    hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int
) -> np.ndarray:
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) | np.uint64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    off = offsets.astype(np.int64)
    out = np.empty((len(off) - 1, num_perm), dtype=np.uint32)
    for lo in range(0, len(off) - 1, 64):
        hi = min(lo + 64, len(off) - 1)
        x = hashes[off[lo] : off[hi]]
        hv = ((x[:, None] * a + b) >> np.uint64(32)).astype(np.uint32)
        out[lo:hi] = np.minimum.reduceat(hv, off[lo:hi] - off[lo], axis=0)
    return out


def lsh_bands(num_perm: int, threshold: float, recall: float) -> tuple[int, int]:
    """(bands, rows): the most rows per band such that a pair exactly at `threshold` becomes a
    candidate with probability >= `recall` (fewest candidates for that recall).

    >>> lsh_bands(128, 0.8, 0.995)
    (21, 6)
    """
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


def _buckets(sig: np.ndarray, bands: int, rows: int, seed: int) -> list[np.ndarray]:
    """Groups (of two or more doc indices) that share one band of their signature."""
    import numpy as np

    mults = np.random.default_rng(seed + 2).integers(1, 2**63, size=rows, dtype=np.uint64)
    groups: list[np.ndarray] = []
    for band in range(bands):
        cols = sig[:, band * rows : (band + 1) * rows].astype(np.uint64)
        keys = (cols * (mults | np.uint64(1))).sum(axis=1, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        same = keys[order][1:] == keys[order][:-1]
        multi = np.concatenate([[False], same]) | np.concatenate([same, [False]])
        members, starts = order[multi], np.concatenate([[False], same])[multi]
        groups.extend(np.split(members, np.flatnonzero(~starts)[1:]))
    return groups


class _ShingleSets:
    """Exact Jaccard of two docs' shingle sets, each set built once on first use."""

    def __init__(self, hashes: np.ndarray, offsets: np.ndarray) -> None:
        self.hashes, self.offsets = hashes, offsets.astype("int64")
        self.cache: dict[int, Any] = {}

    def get(self, i: int) -> Any:
        if i not in self.cache:
            import numpy as np

            self.cache[i] = np.unique(self.hashes[self.offsets[i] : self.offsets[i + 1]])
        return self.cache[i]

    def jaccard(self, i: int, j: int) -> float:
        import numpy as np

        a, b = self.get(i), self.get(j)
        inter = len(np.intersect1d(a, b, assume_unique=True))
        return inter / (len(a) + len(b) - inter)


def _greedy(
    buckets: list[np.ndarray], n: int, sets: _ShingleSets, threshold: float
) -> dict[int, int]:
    """Visit docs best first (index order); drop a doc whose exact Jaccard with an already kept
    doc sharing a bucket is >= `threshold`. Returns {dropped: kept}."""
    member_of: dict[int, list[int]] = {}
    for g, members in enumerate(buckets):
        for i in members.tolist():
            member_of.setdefault(i, []).append(g)
    kept_in: list[list[int]] = [[] for _ in buckets]
    drops: dict[int, int] = {}
    for i in sorted(member_of):
        cands = sorted({c for g in member_of[i] for c in kept_in[g]})
        match = next((c for c in cands if sets.jaccard(i, c) >= threshold), None)
        if match is not None:
            drops[i] = match
            continue
        for g in member_of[i]:
            kept_in[g].append(i)
    return drops
