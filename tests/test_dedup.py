"""Dedup, decontamination and balance on seeded generated trajectories."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import orjson
import pytest

from agentmill.curation.balance import balance
from agentmill.curation.decontaminate import decontaminate
from agentmill.curation.dedup import dedup
from agentmill.curation.dedup_config import BalanceConfig, DecontamConfig, DedupConfig
from agentmill.records import AgentStats, Message, Provenance, Trajectory
from agentmill.testing.near_dupes import variant

pytest.importorskip("numpy")


def traj(i: int, text: str, reward: float = 0.5, steps: int = 1) -> Trajectory:
    return Trajectory(
        id=f"r{i}",
        task_id=f"t{i}",
        messages=[Message(role="user", content=text), Message(role="assistant", content="ok")],
        rewards={"r": reward},
        agent=AgentStats(steps=steps),
    )


@pytest.fixture(scope="module")
def planted() -> dict[str, list]:
    """~2,000 records: 1,600 originals, 250 near, 100 far, 50 exact (case/space) copies."""
    rng = random.Random(7)
    vocab = [f"w{n}" for n in range(3000)]
    docs = [[rng.choice(vocab) for _ in range(200)] for _ in range(1600)]
    near = [(o, variant(rng, docs[o], vocab, True)) for o in rng.sample(range(1600), 250)]
    far = [(o, variant(rng, docs[o], vocab, False)) for o in rng.sample(range(1600), 100)]
    texts = [" ".join(d) for d in docs]
    texts += [" ".join(w) for _, w in near + far]
    texts += ["  " + texts[o].upper().replace(" ", "   ") for o in range(50)]
    return {"texts": texts, "near": [o for o, _ in near], "far": [o for o, _ in far]}


def test_near_and_exact_duplicates(planted: dict[str, list]) -> None:
    texts = planted["texts"]
    res = dedup([traj(i, t) for i, t in enumerate(texts)], DedupConfig())
    kept = {t.id for t in res.kept}
    base = 1600
    caught = sum(not {f"r{o}", f"r{base + j}"} <= kept for j, o in enumerate(planted["near"]))
    assert caught / len(planted["near"]) >= 0.95
    far_ids = {f"r{base + 250 + j}" for j in range(100)}
    assert far_ids <= kept
    exact = [d for d in res.dropped if d[1] == "exact_duplicate"]
    assert {d[0].id for d in exact} == {f"r{base + 350 + j}" for j in range(50)}
    assert all(d[2] == f"r{int(d[0].id[1:]) - base - 350}" for d in exact)
    assert all(d[1] in ("exact_duplicate", "near_duplicate") for d in res.dropped)


def test_best_scored_member_is_kept() -> None:
    rng = random.Random(1)
    words = [f"v{rng.randrange(500)}" for _ in range(60)]
    a = " ".join(words)
    b = " ".join(words[:-1] + ["zz"])
    ts = [traj(0, a, 0.2), traj(1, b, 0.9), traj(2, a.upper(), 0.9, steps=3)]
    res = dedup(ts, DedupConfig())
    assert [t.id for t in res.kept] == ["r1"]
    assert {(t.id, why, k) for t, why, k in res.dropped} == {
        ("r0", "exact_duplicate", "r2"),
        ("r2", "near_duplicate", "r1"),
    }


def test_tie_break_fewest_steps_then_first() -> None:
    ts = [
        traj(0, "Same  text", 1.0, steps=4),
        traj(1, "same text", 1.0, 2),
        traj(2, "SAME text", 1.0, 2),
    ]
    res = dedup(ts, DedupConfig())
    assert [t.id for t in res.kept] == ["r1"]


def test_answer_field_keeps_empty() -> None:
    ts = [Trajectory(id=str(i), task_id="t", messages=[]) for i in range(3)]
    assert len(dedup(ts, DedupConfig(field="answer")).kept) == 3


def test_decontaminate_names_the_eval_file(tmp_path: Path) -> None:
    rng = random.Random(3)
    vocab = [f"q{n}" for n in range(2000)]
    qs = [" ".join(rng.choice(vocab) for _ in range(30)) for _ in range(40)]
    (tmp_path / "math.jsonl").write_bytes(
        b"\n".join(orjson.dumps({"id": n, "problem": q}) for n, q in enumerate(qs[:5]))
    )
    (tmp_path / "qa.txt").write_text("\n".join(qs[5:10]) + "\n")
    records = [traj(i, f"Please solve: {q}. Thanks!" if i % 2 else q) for i, q in enumerate(qs)]
    cfg = DecontamConfig(eval_files=[str(tmp_path / "math.jsonl"), str(tmp_path / "qa.txt")])
    kept, dropped = decontaminate(records, cfg)
    got = {t.id: why for t, why in dropped}
    want = {f"r{i}": "contaminated:math.jsonl" for i in range(5)}
    want |= {f"r{i}": "contaminated:qa.txt" for i in range(5, 10)}
    assert got == want and len(kept) == 30


def test_decontaminate_partial_overlap_and_scope(tmp_path: Path) -> None:
    item = " ".join(f"e{n}" for n in range(20))
    (tmp_path / "ev.txt").write_text(item + "\n")
    hit = "prefix words " + " ".join(f"e{n}" for n in range(3, 16))  # 13 shared words
    miss = "prefix words " + " ".join(f"e{n}" for n in range(3, 15))  # 12 shared words
    late = Trajectory(
        id="late",
        task_id="t",
        messages=[
            Message(role="user", content="hi"),
            Message(role="assistant", content="?"),
            Message(role="user", content=hit),
        ],
    )
    cfg = DecontamConfig(eval_files=[str(tmp_path / "ev.txt")])
    _, dropped = decontaminate([traj(0, hit), traj(1, miss), late], cfg)
    assert [t.id for t, _ in dropped] == ["r0", "late"]
    _, dropped = decontaminate([late], cfg.model_copy(update={"scope": "query"}))
    assert dropped == []


def _sourced(n: int, source: str) -> list[Trajectory]:
    return [
        Trajectory(
            id=f"{source}{i}", task_id="t", messages=[], provenance=Provenance(source=source)
        )
        for i in range(n)
    ]


def test_balance_cap_and_proportions() -> None:
    ts = _sourced(50, "a") + _sourced(30, "b") + _sourced(5, "c")
    res = balance(ts, BalanceConfig(key="source", mode="cap", cap=10))
    assert res.before == {"a": 50, "b": 30, "c": 5}
    assert res.after == {"a": 10, "b": 10, "c": 5}
    assert len(res.dropped) == 60 and res.dropped[0][1] == "balance_cap:a"
    cfg = BalanceConfig(key="source", mode="proportions", proportions={"a": 0.6, "b": 0.4})
    res = balance(ts, cfg)
    assert res.after == {"a": 45, "b": 30}
    assert balance(ts, cfg).kept == res.kept  # seeded
    up = balance(
        ts, cfg.model_copy(update={"allow_upsample": True, "proportions": {"a": 0.5, "c": 0.5}})
    )
    assert up.after == {"a": 28, "c": 28}  # 55 * 0.5 = 27.5 rounds to even


def test_balance_builtin_keys() -> None:
    ts = [traj(i, "x", reward=r) for i, r in enumerate([0.0, 0.1, 0.9, 1.0])]
    ts[0].metadata["category"] = "math"
    res = balance(ts, BalanceConfig(key="reward_bucket", mode="cap", cap=1))
    assert res.before == {"0": 2, "1": 2} and res.after == {"0": 1, "1": 1}
    assert balance(ts, BalanceConfig(key="metadata.category", cap=9)).before == {
        "math": 1,
        "none": 3,
    }
    assert balance(ts, BalanceConfig(key="tool", cap=9)).before == {"none": 4}


def test_numpy_signatures_without_rensa(
    planted: dict[str, list], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "rensa", None)  # import rensa -> ImportError
    texts = planted["texts"][:1950]
    kept = {t.id for t in dedup([traj(i, t) for i, t in enumerate(texts)], DedupConfig()).kept}
    caught = sum(not {f"r{o}", f"r{1600 + j}"} <= kept for j, o in enumerate(planted["near"]))
    assert caught / len(planted["near"]) >= 0.95
    assert {f"r{1850 + j}" for j in range(100)} <= kept
