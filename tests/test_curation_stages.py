"""Dedup -> decontaminate -> balance as run stages and as commands, on real files.

The rollouts come from the scripted FAKE backend (these are control-flow tests of the stages);
dedup, decontamination, balance, scoring, the run folder and the CLI are the real ones.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from agentmill.curation.dedup import normalize
from agentmill.records import FunctionCall, Message, Provenance, ToolCall, Trajectory
from agentmill.store import iter_jsonl

RNG = random.Random(11)  # module constants only; each helper and test seeds its own
VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "po", "ri", "su", "te") for b in range(60)]


def _words(n: int, rng: random.Random = RNG) -> list[str]:
    return [rng.choice(VOCAB) for _ in range(n)]


def _lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


# Eval items: 20 distinct words each; a task that quotes 13 of them in a row is contaminated.
EVAL = {name: " ".join(_words(20)) for name in ("gsm", "parq", "txt")}
NEAR = _words(40)


def _quote(item: str) -> str:
    return "Please solve this: " + " ".join(item.split()[4:17]) + " and explain."


def _tasks(tmp: Path) -> Path:
    rng = random.Random(5)
    rows = [
        # an exact duplicate (case, punctuation): the better-scored second one is kept
        {"question": "What is two plus two? Think step by step!", "answer": "5", "category": "ar"},
        {"question": "what is two plus TWO think step  by step", "answer": "4", "category": "ar"},
        # a near duplicate (one word of 40 changed): the first one scores better
        {"question": " ".join(NEAR), "answer": "4", "category": "wd"},
        {"question": " ".join([*NEAR[:20], "zz", *NEAR[21:]]), "answer": "5", "category": "wd"},
        # one hit per eval set
        *({"question": _quote(EVAL[n]), "answer": "4", "category": "ev"} for n in EVAL),
        # four more of category ar, one more of wd: balance caps ar at 2
        *({"question": " ".join(_words(6, rng)), "answer": "4", "category": "ar"} for _ in "abcd"),
        {"question": " ".join(_words(6, rng)), "answer": "4", "category": "wd"},
    ]
    path = tmp / "tasks.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _evals(tmp: Path) -> dict[str, Path]:
    rng = random.Random(6)
    noise = [" ".join(_words(20, rng)) for _ in range(3)]
    paths = {"gsm": tmp / "gsm.jsonl", "parq": tmp / "mathx.parquet", "txt": tmp / "qa.txt"}
    rows = [{"question": q} for q in [*noise, EVAL["gsm"]]]
    paths["gsm"].write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    pq.write_table(pa.table({"problem": [*noise, EVAL["parq"]]}), paths["parq"])
    paths["txt"].write_text("\n".join([*noise, EVAL["txt"]]) + "\n")
    return paths


def _cfg(tmp: Path, **extra: Any) -> dict[str, Any]:
    ev = _evals(tmp)
    cfg = {
        "name": "cur",
        "sources": [{"path": str(_tasks(tmp))}],
        "backends": {"teacher": {"type": "scripted", "replies": ["4"], "max_concurrency": 1}},
        "rollout": {"n": 1},
        "score": {"rewards": ["math"]},
        "dedup": {"field": "query"},
        "decontaminate": {
            "eval_files": [{"path": str(ev["gsm"]), "name": "gsm"}, str(ev["parq"]), str(ev["txt"])]
        },
        "balance": {"key": "category", "cap": 2},
        "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
    }
    return cfg | extra


def _inode(run: Path, stage: str) -> int:
    return (run / stage / "records.jsonl").stat().st_ino


def _query(rec: dict[str, Any]) -> str:
    return next(m["content"] for m in rec["messages"] if m["role"] == "user")


def test_curation_stages_in_a_run(tmp_path: Path, cli, write_config) -> None:
    out = tmp_path / "run"
    rc, stdout, err = cli("run", write_config(_cfg(tmp_path)), "--out", out)
    assert rc == 0, stdout + err
    scored = {_query(t): t for t in _lines(out / "score" / "records.jsonl")}
    assert len(scored) == 12
    dd = _lines(out / "dedup" / "dropped.jsonl")
    by_reason = {d["reason"]: d for d in dd}
    assert sorted(by_reason) == ["exact_duplicate", "near_duplicate"] and len(dd) == 2
    exact = by_reason["exact_duplicate"]
    assert exact["record"]["rewards"]["math"] == 0.0  # the worse-scored copy went
    kept_by_dedup = {t["id"]: t for t in _lines(out / "dedup" / "records.jsonl")}
    assert kept_by_dedup[exact["kept_id"]]["rewards"]["math"] == 1.0
    assert "zz" in _query(by_reason["near_duplicate"]["record"])
    dc = _lines(out / "decontaminate" / "dropped.jsonl")
    assert {d["reason"] for d in dc} == {
        "contaminated:gsm",
        "contaminated:mathx.parquet",
        "contaminated:qa.txt",
    }
    items = {"gsm": EVAL["gsm"], "mathx.parquet": EVAL["parq"], "qa.txt": EVAL["txt"]}
    for d in dc:
        assert len(d["ngram"].split()) == 13 and d["ngram"] in normalize(items[d["eval_set"]])
        assert d["ngram"] in normalize(_query(d["record"]))
    stats = orjson.loads((out / "balance" / "stats.json").read_bytes())
    assert stats["before"] == {"ar": 5, "wd": 2} and stats["after"] == {"ar": 2, "wd": 2}
    assert stats["dropped"] == {"balance_cap:ar": 3}
    kept = _lines(out / "balance" / "records.jsonl")
    assert len(kept) == len(_lines(out / "export" / "sft.jsonl")) == 4
    assert {t["id"] for t in _lines(out / "export" / "sft.jsonl")} == {t["id"] for t in kept}
    dstats = orjson.loads((out / "decontaminate" / "stats.json").read_bytes())
    assert dstats["eval_sets"]["gsm"] == {"items": 4, "hits": 1} and dstats["input"] == 10
    for line in (
        "dedup dropped exact_duplicate: 1",
        "dedup dropped near_duplicate: 1",
        "decontaminate dropped contaminated:mathx.parquet: 1",
        "balance dropped balance_cap:ar: 3",
        "balance by category: ar 5 -> 2, wd 2 -> 2",
    ):
        assert line in stdout, line
    assert "after balance" in stdout
    rc, stdout, _ = cli("status", out, "--json")
    status = orjson.loads(stdout)
    assert status["curation"]["decontaminate"]["dropped"]["contaminated:gsm"] == 1
    assert status["funnel"]["curation"]["dedup"]["kept"] == 10
    rc, stdout, _ = cli("status", out)
    assert rc == 0 and "balance by category: ar 5 -> 2, wd 2 -> 2" in stdout
    assert "decontaminate dropped contaminated:gsm: 1" in stdout


def test_a_changed_stage_reruns_alone(tmp_path: Path, cli, write_config) -> None:
    out = tmp_path / "run"
    cfg = _cfg(tmp_path)
    assert cli("run", write_config(cfg), "--out", out)[0] == 0
    first = {s: _inode(out, s) for s in ("score", "dedup", "decontaminate", "balance")}
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out)  # nothing changed: all reused
    assert rc == 0 and "model calls 0" in stdout
    assert {s: _inode(out, s) for s in first} == first
    rc, stdout, _ = cli(
        "run", write_config(cfg | {"balance": {"key": "category", "cap": 3}}), "--out", out
    )
    assert rc == 0 and "model calls 0" in stdout
    assert _inode(out, "dedup") == first["dedup"]
    assert _inode(out, "decontaminate") == first["decontaminate"]
    assert [p.name.split(".")[0] for p in out.glob("*.*") if p.is_dir()] == ["balance"]
    assert len(_lines(out / "balance" / "records.jsonl")) == 5  # ar 3 + wd 2
    # dedup changed: dedup and every curation stage after it rebuilt; score untouched
    cfg = cfg | {"balance": {"key": "category", "cap": 3}, "dedup": {"near": False}}
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0 and "model calls 0" in stdout and "near_duplicate" not in stdout
    aside = sorted(p.name.split(".")[0] for p in out.glob("*.*") if p.is_dir())
    assert aside == ["balance", "balance", "decontaminate", "dedup"]
    assert _inode(out, "score") == first["score"]
    assert orjson.loads((out / "balance" / "stats.json").read_bytes())["before"]["wd"] == 3
    # a stage taken out of the config is moved aside: contaminated records reach balance
    del cfg["decontaminate"]
    assert cli("run", write_config(cfg), "--out", out)[0] == 0
    assert not (out / "decontaminate").exists()
    assert orjson.loads((out / "balance" / "stats.json").read_bytes())["before"]["ev"] == 3


def test_bad_curation_config_fails_before_any_rollout(tmp_path: Path, cli, write_config) -> None:
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, decontaminate={"eval_files": [str(tmp_path / "nope.jsonl")]})
    rc, _, err = cli("run", write_config(cfg), "--out", out)
    assert rc == 2 and "eval file not found" in err and "nope.jsonl" in err
    assert not (out / "rollout").exists()
    rc, _, err = cli("run", write_config(_cfg(tmp_path, balance={"key": "colour", "cap": 1})))
    assert rc == 2 and "balance.key" in err and "unknown balance key" in err
    rc, _, err = cli("run", write_config(_cfg(tmp_path, balance={"key": "tool"})))
    assert rc == 2 and "needs cap" in err
    capped = {"key": "tool", "cap": 2, "max_total": 5}
    rc, _, err = cli("run", write_config(_cfg(tmp_path, balance=capped)))
    assert rc == 2 and "max_total applies to mode: proportions" in err


# ---------------------------------------------------------------- commands on files
def _traj(i: int, query: str, reward: float, **kw: Any) -> Trajectory:
    msgs = [Message(role="user", content=query), Message(role="assistant", content=f"a{i}")]
    return Trajectory(
        id=f"r{i}",
        task_id=f"t{i}",
        messages=msgs,
        rewards={"m": reward},
        final_answer=f"a{i}",
        **kw,
    )


def _write(path: Path, trajs: list[Trajectory], extra: bytes = b"") -> Path:
    path.write_bytes(b"".join(t.to_json() + b"\n" for t in trajs) + extra)
    return path


def test_dedup_command(tmp_path: Path, cli) -> None:
    rng = random.Random(7)
    text = " ".join(_words(30, rng))
    trajs = [
        _traj(0, text, 0.2),
        _traj(1, text.upper() + "!", 0.9),
        _traj(2, text.replace(text.split()[15], "qq", 1), 0.5),
        _traj(3, " ".join(_words(30, rng)), 0.1),
    ]
    src = _write(tmp_path / "in.jsonl", trajs, b'{"not": "a trajectory"}\n')
    rc, stdout, _ = cli("dedup", src, "-o", tmp_path / "out.jsonl")
    assert rc == 0 and "kept 2" in stdout and "not_a_trajectory: 1" in stdout
    assert "dedup dropped exact_duplicate: 1" in stdout and "near_duplicate: 1" in stdout
    assert [t["id"] for t in _lines(tmp_path / "out.jsonl")] == ["r1", "r3"]
    dropped = _lines(tmp_path / "out.dropped.jsonl")
    assert {(d["record"]["id"], d["reason"], d["kept_id"]) for d in dropped} == {
        ("r0", "exact_duplicate", "r1"),
        ("r2", "near_duplicate", "r1"),
    }
    rc, stdout, _ = cli("dedup", src, "-o", tmp_path / "o2.jsonl", "--no-near")
    assert rc == 0 and "kept 3" in stdout
    rc, stdout, _ = cli("dedup", src, "-o", tmp_path / "o3.jsonl", "--field", "answer")
    assert rc == 0 and "kept 4" in stdout  # every answer differs
    rc, _, err = cli("dedup", src, "-o", tmp_path / "x.jsonl", "--no-near", "--no-exact")
    assert rc == 2 and "nothing to do" in err
    rc, _, err = cli("dedup", src, "-o", tmp_path / "x.jsonl", "--field", "title")
    assert rc == 2 and "--field" in err and "title" in err
    rc, _, err = cli("dedup", src, "-o", tmp_path / "x.jsonl", "--threshold", "1.5")
    assert rc == 2 and "--threshold" in err
    rc, _, err = cli("dedup", src, "-o", tmp_path / "x.jsonl", "--strict")
    assert rc == 2 and "not_a_trajectory" in err
    rc, _, err = cli("dedup", tmp_path / "missing.jsonl", "-o", tmp_path / "x.jsonl")
    assert rc == 2 and "file not found" in err


def test_decontaminate_command_names_each_eval_set(tmp_path: Path, cli) -> None:
    ev = _evals(tmp_path)
    trajs = [_traj(i, _quote(EVAL[n]), 1.0) for i, n in enumerate(EVAL)]
    late = _traj(3, "hello", 1.0)
    late.messages += [Message(role="user", content=_quote(EVAL["txt"]))]  # a later user turn
    trajs += [late, _traj(4, " ".join(_words(25, random.Random(8))), 1.0)]
    src = _write(tmp_path / "in.jsonl", trajs)
    evals = ["--eval", f"{ev['gsm']}:gsm8k", "--eval", ev["parq"], "--eval", ev["txt"]]
    rc, stdout, _ = cli("decontaminate", src, "-o", tmp_path / "out.jsonl", *evals)
    assert rc == 0 and "kept 1" in stdout, stdout
    assert "contaminated:gsm8k: 1" in stdout and "contaminated:qa.txt: 2" in stdout
    assert "eval set mathx.parquet: 4 items, 1 hits" in stdout
    dropped = {d["record"]["id"]: d for d in _lines(tmp_path / "out.dropped.jsonl")}
    assert {k: d["eval_set"] for k, d in dropped.items()} == {
        "r0": "gsm8k",
        "r1": "mathx.parquet",
        "r2": "qa.txt",
        "r3": "qa.txt",
    }
    rc, stdout, _ = cli(
        "decontaminate", src, "-o", tmp_path / "q.jsonl", *evals, "--scope", "query"
    )
    assert rc == 0 and "kept 2" in stdout  # r3's hit is not in its query
    rc, stdout, _ = cli("decontaminate", src, "-o", tmp_path / "n.jsonl", *evals, "--ngram", "14")
    assert rc == 0 and "kept 5" in stdout  # only 13 words are shared


def test_decontaminate_command_bad_inputs(tmp_path: Path, cli) -> None:
    src = _write(tmp_path / "in.jsonl", [_traj(0, "hello there", 1.0)])
    out = ["-o", tmp_path / "out.jsonl"]
    rc, _, err = cli("decontaminate", src, *out, "--eval", tmp_path / "none.jsonl")
    assert rc == 2 and "eval file not found" in err and "none.jsonl" in err
    (tmp_path / "ids.jsonl").write_text('{"id": 1}\n{"id": 2}\n')
    rc, _, err = cli("decontaminate", src, *out, "--eval", tmp_path / "ids.jsonl")
    assert rc == 2 and "has no items" in err and "--field" in err
    rc, stdout, _ = cli(
        "decontaminate", src, *out, "--eval", tmp_path / "ids.jsonl", "--field", "id"
    )
    assert rc == 2  # a field without text is still no items
    (tmp_path / "bad.jsonl").write_text('{"question": "x"\n')
    rc, _, err = cli("decontaminate", src, *out, "--eval", tmp_path / "bad.jsonl")
    assert rc == 2 and "cannot be read" in err
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "qa.txt").write_text("one two three four five six seven eight nine\n")
    (tmp_path / "qa.txt").write_text("one two three four five six seven eight nine\n")
    rc, _, err = cli(
        "decontaminate", src, *out, "--eval", tmp_path / "qa.txt", "--eval", tmp_path / "a/qa.txt"
    )
    assert rc == 2 and "named 'qa.txt'" in err
    rc, _, err = cli("decontaminate", src, *out, "--eval", tmp_path / "qa.txt", "--scope", "all")
    assert rc == 2 and "--scope" in err
    assert not (tmp_path / "out.jsonl").exists()


def _with_tool(i: int, tool: str | None, source: str) -> Trajectory:
    words = _words(8, random.Random(i))
    t = _traj(i, " ".join(words), 1.0, provenance=Provenance(source=source))
    if tool:
        call = ToolCall(id="c0", function=FunctionCall.parse(tool, {"x": 1}))
        t.messages[1] = Message(role="assistant", content=None, tool_calls=[call])
    return t


def test_balance_command(tmp_path: Path, cli, write_config) -> None:
    trajs = [_with_tool(i, "calc" if i < 6 else None, "a" if i % 2 else "b") for i in range(8)]
    src = _write(tmp_path / "in.jsonl", trajs)
    rc, stdout, _ = cli("balance", src, "-o", tmp_path / "out.jsonl", "--key", "tool", "--cap", "2")
    assert rc == 0 and "kept 4" in stdout and "balance by tool: calc 6 -> 2, none 2 -> 2" in stdout
    assert {d["key"] for d in _lines(tmp_path / "out.dropped.jsonl")} == {"calc"}
    args = ["--key", "tool", "--target", "calc=0.5", "--target", "none=0.5"]
    rc, stdout, _ = cli("balance", src, "-o", tmp_path / "p.jsonl", *args)
    assert rc == 0 and "calc 6 -> 2, none 2 -> 2" in stdout
    rc, stdout, _ = cli("balance", src, "-o", tmp_path / "u.jsonl", *args, "--upsample")
    assert rc == 0 and "calc 6 -> 4, none 2 -> 4" in stdout and "kept 8" in stdout
    # category comes from the tasks of the run folder the trajectories came from
    out = tmp_path / "run"
    assert cli("run", write_config(_cfg(tmp_path, balance=None)), "--out", out)[0] == 0
    rc, stdout, _ = cli(
        "balance", out, "-o", tmp_path / "c.jsonl", "--key", "category", "--cap", "1"
    )
    # a run folder is read at its latest stage (decontaminate/ here: dedup and the eval hits
    # are already gone), never at score/
    assert rc == 0 and "read 7 " in stdout and "ar 5 -> 1, wd 2 -> 1" in stdout
    rc, _, err = cli("balance", src, "-o", tmp_path / "x.jsonl", "--key", "colour", "--cap", "1")
    assert rc == 2 and "unknown balance key" in err
    rc, _, err = cli("balance", src, "-o", tmp_path / "x.jsonl", "--key", "tool")
    assert rc == 2 and "--cap" in err
    rc, _, err = cli("balance", src, "-o", tmp_path / "x.jsonl", "--key", "tool", "--target", "a")
    assert rc == 2 and "KEY=FRACTION" in err
    rc, _, err = cli(
        "balance",
        src,
        "-o",
        tmp_path / "x.jsonl",
        "--key",
        "category",
        "--cap",
        "1",
        "--tasks",
        tmp_path / "nope.jsonl",
    )
    assert rc == 2 and "--tasks" in err


def test_doctests_of_the_stage_modules() -> None:
    import doctest

    import agentmill.curation.dedup_config
    import agentmill.curation.stage

    for mod in (agentmill.curation.stage, agentmill.curation.dedup_config):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


def test_printed_reasons_are_text_not_emoji_codes(cli, tmp_path) -> None:
    """`balance_cap:A:` must not turn into an emoji: data is printed as it is."""
    fixture = Path(__file__).parent / "fixtures" / "analyze" / "trajectories.jsonl"
    out = tmp_path / "b.jsonl"
    rc, stdout, _ = cli("balance", fixture, "-o", out, "--key", "task_id", "--cap", "1")
    assert rc == 0 and "balance_cap:A: 1" in stdout
