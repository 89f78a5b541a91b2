"""Which trajectories a report shows: the best and worst by reward, or a seeded sample.

A record's score is the mean of its rewards; records without rewards are not ranked. When no
record carries a reward, the report shows a sample drawn with `seed` (the same every time).
Records stream through `ExamplePicker`, which holds at most 3n of them: a report on a file of
millions of trajectories needs no more memory than one on a hundred.

>>> recs = [{"id": str(i), "rewards": {"r": i / 4}} for i in range(5)]
>>> picked = pick_examples(recs, 2)
>>> [r["id"] for r in picked["best"]], [r["id"] for r in picked["worst"]]
(['4', '3'], ['0', '1'])
>>> picked = pick_examples(recs[:3], 2)  # fewer than 2n: the upper half is "best"
>>> [r["id"] for r in picked["best"]], [r["id"] for r in picked["worst"]]
(['2', '1'], ['0'])
>>> pick_examples([{"id": "a"}, {"id": "b"}], 1, seed=0)["sample"][0]["id"] in {"a", "b"}
True
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable
from typing import Any

Record = dict[str, Any]


def score(record: Record) -> float | None:
    """The mean of a record's rewards; None when it has none."""
    rewards = [v for v in (record.get("rewards") or {}).values() if isinstance(v, int | float)]
    return sum(rewards) / len(rewards) if rewards else None


class ExamplePicker:
    """Best n and worst n scored records (ties broken by file order), and a seeded reservoir
    sample of n records for when nothing is scored.

    Best and worst never share a record: with fewer than 2n scored records the best list takes
    the upper half (rounded up) and the worst list the rest. The worst n are among the 2n lowest
    overall, so two bounded heaps are enough.
    """

    def __init__(self, n: int, seed: int = 0):
        self.n = n
        self.seen = self.scored = 0
        self._rng = random.Random(seed)
        self._best: list[tuple[float, int, Record]] = []  # min-heap of (score, -index)
        self._low: list[tuple[float, int, Record]] = []  # min-heap of (-score, -index)
        self._sample: list[tuple[int, Record]] = []

    def add(self, rec: Record) -> None:
        i = self.seen
        self.seen += 1
        if self.n <= 0:
            return
        if len(self._sample) < self.n:  # reservoir sampling (Algorithm R)
            self._sample.append((i, rec))
        else:
            j = self._rng.randrange(i + 1)
            if j < self.n:
                self._sample[j] = (i, rec)
        s = score(rec)
        if s is None:
            return
        self.scored += 1
        _push(self._best, (s, -i, rec), self.n)
        _push(self._low, (-s, -i, rec), 2 * self.n)

    def result(self) -> dict[str, list[Record]]:
        if not self._best:
            return {"sample": [r for _, r in sorted(self._sample, key=lambda ir: ir[0])]}
        best = sorted(self._best, key=lambda e: (-e[0], -e[1]))[: -(-self.scored // 2)]
        taken = {-e[1] for e in best}
        low = sorted((-s, -i, r) for s, i, r in self._low)  # (score, index): unique indexes
        worst = [r for _, i, r in low if i not in taken][: self.n]
        return {"best": [r for _, _, r in best], "worst": worst}


def _push(heap: list[tuple[float, int, Record]], item: tuple[float, int, Record], cap: int) -> None:
    # the index in item[1] is unique, so the record itself is never compared
    if len(heap) < cap:
        heapq.heappush(heap, item)
    elif item[:2] > heap[0][:2]:
        heapq.heapreplace(heap, item)


def pick_examples(records: Iterable[Record], n: int, seed: int = 0) -> dict[str, list[Record]]:
    """{"best": [...], "worst": [...]} by score, or {"sample": [...]} when nothing is scored."""
    picker = ExamplePicker(n, seed)
    for rec in records:
        picker.add(rec)
    return picker.result()
