"""Dedup benchmark: agentmill's dedup against a plain datasketch (MinHash + MinHashLSH) pipeline.

    .venv/bin/python bench/dedup.py            # 100,000 trajectories of ~200 words
    .venv/bin/python bench/dedup.py --n 20000  # smaller

Planted truth: 8% near-duplicates (1-6 random word edits, Jaccard of 3-word shingles >= 0.8,
checked), 2% far variants (Jaccard < 0.5), 2% exact copies differing in case/whitespace. Each
pipeline runs in a forked child: records/s per CPU second (one core), peak RSS growth, precision
and recall against the planted pairs and against exact Jaccard >= 0.8 on a 10,000-record sample.
Needs `pip install datasketch rensa scipy`.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import resource
import time
from typing import Any

from agentmill.curation.dedup import dedup, field_text, normalize, rank_key
from agentmill.curation.dedup_config import DedupConfig
from agentmill.records import Message, Trajectory
from agentmill.testing.near_dupes import shingles, variant


def generate(n: int, seed: int = 0) -> tuple[list[Trajectory], list[int]]:
    """`n` trajectories and, for each, the index of the original it copies (itself if none)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    n_orig = n - n * 12 // 100
    docs = [[rng.choice(vocab) for _ in range(rng.randint(150, 250))] for _ in range(n_orig)]
    texts, group = [" ".join(d) for d in docs], list(range(n_orig))
    for kind, count in (("near", n * 8 // 100), ("far", n * 2 // 100), ("exact", n * 2 // 100)):
        for o in rng.sample(range(n_orig), count):
            if kind == "exact":
                texts.append(" " + texts[o].upper().replace(" ", "  "))
            else:
                texts.append(" ".join(variant(rng, docs[o], vocab, kind == "near")))
            group.append(o if kind != "far" else len(group))
    perm = list(range(len(texts)))
    rng.shuffle(perm)
    records = [_traj(i, texts[p], rng.random()) for i, p in enumerate(perm)]
    where = {p: i for i, p in enumerate(perm)}
    return records, [where.get(group[p], i) for i, p in enumerate(perm)]


def _traj(i: int, text: str, reward: float) -> Trajectory:
    msgs = [Message(role="user", content=text), Message(role="assistant", content="done")]
    return Trajectory(id=str(i), task_id=str(i), messages=msgs, rewards={"r": reward})


def datasketch_dedup(records: list[Trajectory], cfg: DedupConfig) -> dict[str, str]:
    """The baseline: same normalization and exact step, then MinHash.update_batch + MinHashLSH
    queried best first. Returns {dropped id: kept id}."""
    from datasketch import MinHash, MinHashLSH

    texts = [normalize(field_text(t, cfg.field)) for t in records]
    order = sorted(range(len(records)), key=lambda i: rank_key(records[i], texts[i], i))
    lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
    seen: dict[str, str] = {}
    drops: dict[str, str] = {}
    for i in order:
        rid = records[i].id
        if texts[i] in seen:
            drops[rid] = seen[texts[i]]
            continue
        seen[texts[i]] = rid
        w = texts[i].split()
        m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed)
        m.update_batch([" ".join(w[j : j + 3]).encode() for j in range(max(len(w) - 2, 1))])
        hits = lsh.query(m)
        if hits:
            drops[rid] = hits[0]
        else:
            lsh.insert(rid, m)
    return drops


def agentmill_dedup(records: list[Trajectory], cfg: DedupConfig) -> dict[str, str]:
    """agentmill.curation.dedup. Returns {dropped id: kept id}."""
    return {t.id: k for t, _, k in dedup(records, cfg).dropped}


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))


def _child(fn: Any, records: list[Trajectory], conn: Any) -> None:
    start_rss = _rss_kb()
    wall, cpu = time.perf_counter(), time.process_time()
    drops = fn(records, DedupConfig(field="query"))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conn.send({"drops": drops, "wall": wall, "cpu": cpu, "mem_mb": (peak - start_rss) / 1024})


def run(fn: Any, records: list[Trajectory]) -> dict[str, Any]:
    """Run `fn` in a forked child; its drops, wall and CPU seconds, peak RSS growth."""
    ctx = mp.get_context("fork")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(fn, records, there))
    proc.start()
    out = here.recv()
    proc.join()
    return out


def planted_scores(drops: dict[str, str], group: list[int]) -> tuple[float, float]:
    """(precision, recall) against the planted copy -> original pairs."""
    good = sum(group[int(d)] == group[int(k)] for d, k in drops.items())
    pairs = [(i, g) for i, g in enumerate(group) if g != i]
    found = sum(str(i) in drops or str(g) in drops for i, g in pairs)
    return good / max(len(drops), 1), found / max(len(pairs), 1)


def sample_scores(
    records: list[Trajectory], drops: dict[str, str], size: int, seed: int = 1
) -> tuple[float, float]:
    """(precision, recall) against exact Jaccard >= 0.8 of 3-word shingles on a random sample."""
    import numpy as np
    from scipy.sparse import csr_matrix

    idx = sorted(random.Random(seed).sample(range(len(records)), min(size, len(records))))
    sets = [shingles(normalize(field_text(records[i], "query")).split()) for i in idx]
    vocab: dict[tuple[str, ...], int] = {}
    rows = [[vocab.setdefault(s, len(vocab)) for s in ss] for ss in sets]
    data = csr_matrix(
        (
            np.ones(sum(map(len, rows))),
            np.concatenate(rows),
            np.cumsum([0] + [len(r) for r in rows]),
        ),
        shape=(len(rows), len(vocab)),
    )
    inter = (data @ data.T).tocoo()
    sizes = np.array([len(s) for s in sets])
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    truth = {
        (idx[a], idx[b])
        for a, b, j in zip(inter.row, inter.col, jac, strict=True)
        if a < b and j >= 0.8
    }
    ids = {str(i) for i in idx}
    found = sum(str(a) in drops or str(b) in drops for a, b in truth)
    pos = {str(i): n for n, i in enumerate(idx)}
    mine = [(pos[d], pos[k]) for d, k in drops.items() if d in ids and k in ids]
    good = sum(len(sets[a] & sets[b]) / len(sets[a] | sets[b]) >= 0.8 for a, b in mine)
    return good / max(len(mine), 1), found / max(len(truth), 1)


def main() -> None:
    """Generate, run both pipelines, print one table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--sample", type=int, default=10_000)
    args = ap.parse_args()
    t0 = time.perf_counter()
    records, group = generate(args.n)
    print(f"generated {len(records)} records in {time.perf_counter() - t0:.1f}s")
    head = f"{'pipeline':<22}{'wall s':>8}{'rec/s/core':>12}{'peak MB':>9}"
    print(head + f"{'P plant':>9}{'R plant':>9}{'P exactJ':>10}{'R exactJ':>10}{'drops':>8}")
    for name, fn in (("datasketch (plain)", datasketch_dedup), ("agentmill", agentmill_dedup)):
        res = run(fn, records)
        p, r = planted_scores(res["drops"], group)
        sp, sr = sample_scores(records, res["drops"], args.sample)
        rate = len(records) / res["cpu"]
        print(
            f"{name:<22}{res['wall']:>8.1f}{rate:>12,.0f}{res['mem_mb']:>9.0f}"
            f"{p:>9.4f}{r:>9.4f}{sp:>10.4f}{sr:>10.4f}{len(res['drops']):>8}"
        )


if __name__ == "__main__":
    main()
