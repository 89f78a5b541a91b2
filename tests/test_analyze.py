"""`agentmill analyze`, `compare` and `show`: figures worked out by hand on a fixture file, and a
run folder made by the pipeline with the scripted fake backend (control flow: no model here)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from agentmill.report.analyze import analyze
from agentmill.report.compare import compare
from agentmill.report.examples import pick_examples
from agentmill.report.timeline import timeline
from agentmill.store import iter_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "analyze" / "trajectories.jsonl"


def test_figures_match_the_hand_count() -> None:
    a = analyze(FIXTURE)
    assert (a["records"], a["tasks"], a["not_trajectories"]) == (4, 3, 0)
    # scored: t1 (math 1, format 1), t2 (math 0), t4 (math 0.5); only t1 has every reward = 1
    assert a["success_rate"] == pytest.approx(1 / 3)
    assert a["status"] == {"ok": 3, "failed": 1}
    assert a["stop_reasons"] == {"stop": 2, "length": 1, "error": 1}
    math, fmt = a["rewards"]["math"], a["rewards"]["format"]
    assert (math["count"], math["mean"], math["min"], math["max"]) == (3, 0.5, 0.0, 1.0)
    assert math["histogram"]["counts"] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert (fmt["count"], fmt["mean"], fmt["histogram"]["counts"][-1]) == (2, 1.0, 2)
    # steps: agent.steps 2, 3, 1; t3 has no agent stats -> its 2 assistant messages
    steps = a["steps"]
    assert (steps["count"], steps["mean"], steps["p50"], steps["p90"], steps["max"]) == (
        4,
        2.0,
        2,
        3,
        3,
    )
    assert steps["histogram"] == {"edges": [1, 2, 3, 4], "counts": [1, 2, 1]}
    prompt, completion, total = (a["tokens"][k] for k in ("prompt", "completion", "total"))
    assert (prompt["mean"], prompt["p50"], prompt["p90"], prompt["max"]) == (75.0, 50, 120, 120)
    # [30, 50, 100, 120] in 10 bins of 9 from 30: bins 0, 2, 7 and the closed last one
    assert prompt["histogram"]["counts"] == [1, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    assert (completion["mean"], completion["p50"], completion["max"]) == (20.0, 10, 50)
    assert (total["mean"], total["p50"], total["p90"]) == (95.0, 50, 170)
    # calls: t1 calculator ok; t2 calculator malformed (error) + search ok;
    # t3 search timed out (error) + browse unknown (error, content as parts)
    assert a["tool_calls"] == 5 and a["malformed_call_rate"] == pytest.approx(0.2)
    assert a["tools"] == {
        "browse": {"calls": 1, "errors": 1, "error_rate": 1.0},
        "calculator": {"calls": 2, "errors": 1, "error_rate": 0.5},
        "search": {"calls": 2, "errors": 1, "error_rate": 0.5},
    }
    assert a["by_source"] == {
        "math": {"records": 2, "success_rate": 0.5},
        "web": {"records": 2, "success_rate": 0.0},  # only t4 is scored there
    }
    assert a["by_model"] == {
        "m1": {"records": 2, "success_rate": 1.0},
        "m2": {"records": 2, "success_rate": 0.0},
    }
    assert a["verdicts"] == {"GOOD": 1, "BAD": 1, "ERROR": 1}  # t2's latest verdict is BAD
    assert a["drops"] == {} and a["funnel"] == []


def test_histogram_bars_sum_to_the_values_counted() -> None:
    a = analyze(FIXTURE)
    for d in [a["steps"], *a["tokens"].values()]:
        assert sum(d["histogram"]["counts"]) == d["count"] == a["records"]
    for d in a["rewards"].values():
        assert sum(d["histogram"]["counts"]) == d["count"]


def test_examples_best_worst_and_seeded_sample() -> None:
    recs = [orjson.loads(line) for _, line in iter_jsonl(FIXTURE)]
    picked = pick_examples(recs, 2)
    # scores (mean reward): t1 1.0, t2 0.5, t4 0.5; t3 unscored and never ranked
    assert [r["id"] for r in picked["best"]] == ["t1", "t2"]
    assert [r["id"] for r in picked["worst"]] == ["t4"]
    bare = [{k: v for k, v in r.items() if k != "rewards"} for r in recs]
    first, again = pick_examples(bare, 2, seed=3), pick_examples(bare, 2, seed=3)
    assert [r["id"] for r in first["sample"]] == [r["id"] for r in again["sample"]]
    assert len(first["sample"]) == 2


def test_compare_gives_differences_with_rates_in_points(tmp_path: Path) -> None:
    lines = FIXTURE.read_bytes().splitlines(keepends=True)
    smaller = tmp_path / "b.jsonl"
    smaller.write_bytes(lines[0] + lines[3])  # t1 (success) and t4 (math 0.5)
    cmp = compare(FIXTURE, smaller, label1="all", label2="two")
    rows = {r["figure"]: r for r in cmp["rows"]}
    assert cmp["labels"] == ["all", "two"]
    assert rows["records"] | {} == {
        "figure": "records",
        "a": 4,
        "b": 2,
        "diff": -2,
        "unit": "count",
    }
    assert rows["success_rate"]["diff"] == pytest.approx(50.0 - 100 / 3)  # 1/2 vs 1/3, in pp
    assert rows["success_rate"]["unit"] == "pp"
    # a tool B never called: 0 calls there, not missing
    assert (rows["tools.browse.calls"]["a"], rows["tools.browse.calls"]["b"]) == (1, 0)
    assert rows["tools.browse.error_rate"]["b"] is None
    assert rows["tools.browse.error_rate"]["diff"] is None


def test_cli_analyze_compare_and_show(cli, tmp_path: Path) -> None:
    rc, out, _ = cli("analyze", FIXTURE, "--json")
    assert rc == 0 and orjson.loads(out)["tool_calls"] == 5
    rc, out, _ = cli("analyze", FIXTURE)
    assert rc == 0
    for text in ("success_rate", "33.3%", "calculator", "50.0%", "length 1", "m2"):
        assert text in out, text
    rc, out, _ = cli("compare", FIXTURE, FIXTURE, "--label1", "x", "--label2", "y")
    assert rc == 0 and "records" in out and "+0.0 pp" in out
    rc, out, _ = cli("show", FIXTURE, "--index", "1")
    assert rc == 0
    for text in ("calculator", "(unparsed) {2+2", "tool search [c2]", "2+2 is 4", "BAD"):
        assert text in out, text


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (b'{"task_id": "A", "messages": []}\nnot json\n', "2 is not valid JSON"),
        (b'{"id": "t", "question": "q?"}\n', "holds no trajectories"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path: Path, content: bytes, error: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    rc, _, err = cli("analyze", path)
    assert rc == 2 and error in err and len(err.strip().splitlines()) == 1
    rc, _, err = cli("analyze", tmp_path / "missing.jsonl")
    assert rc == 2 and "not found" in err


# ---------------------------------------------------------------- a run folder
def test_run_folder_figures_funnel_and_drops(scripted_run) -> None:
    run = scripted_run()
    scored = [orjson.loads(line) for _, line in iter_jsonl(run / "score" / "records.jsonl")]
    a = analyze(run)
    assert a["source"].endswith("score/records.jsonl") and a["records"] == len(scored)
    correct = sum(min(t["rewards"].values()) >= 1.0 for t in scored if t["rewards"])
    assert a["success_rate"] == pytest.approx(correct / len(scored))
    funnel = {r["stage"]: r["records"] for r in a["funnel"]}
    assert funnel["trajectories"] == len(scored) and funnel["kept"] == correct
    assert funnel["exported sft.jsonl"] == correct
    dropped = len(scored) - correct
    assert a["drops"]["filter"] == {"reward_below_min:math": dropped}
    failures = [orjson.loads(line) for _, line in iter_jsonl(run / "failures.jsonl")]
    assert sum(a["drops"].get("rollout", {}).values()) == len(
        {f["key"] for f in failures if f["stage"] == "rollout"}
    )
    assert 0 < correct < len(scored) and a["drops"]["rollout"] == {"http_500": 2}
    kept = analyze(run, stage="filter")
    assert kept["records"] == correct and kept["success_rate"] == 1.0


def test_timeline_counts_match_the_run_files(scripted_run) -> None:
    run = scripted_run()
    calls = [orjson.loads(line) for _, line in iter_jsonl(run / "calls.jsonl")]
    trajs = list(iter_jsonl(run / "rollout" / "records.jsonl"))
    failures = [orjson.loads(line) for _, line in iter_jsonl(run / "failures.jsonl")]
    tl = timeline(run)
    rows = tl["per_minute"]
    assert sum(r["calls"] for r in rows) == tl["calls"] == len(calls)
    assert sum(r["trajectories"] for r in rows) == len(trajs)
    assert sum(r["failures"] for r in rows) == len(failures) > 0
    assert tl["failures_by_reason"] == {"http_500": len(failures)}
    assert tl["cache_hits"] == 0
    # the same config in a fresh folder is answered from the response cache
    again = scripted_run("again")
    tl2 = timeline(again)
    hits = sum(
        c["cache_hit"] for _, line in iter_jsonl(again / "calls.jsonl") if (c := orjson.loads(line))
    )
    assert tl2["cache_hits"] == hits == sum(r["cache_hits"] for r in tl2["per_minute"]) > 0


def test_timeline_reads_created_at_of_the_record_not_of_its_content(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "rollout").mkdir(parents=True)
    args = {"created_at": 0}  # a tool argument of the same name, as a nested object
    recs = [
        {"id": "a", "messages": [{"role": "user", "content": '{"created_at": 60}'}]},
        {"id": "b", "messages": [{"role": "assistant", "tool_calls": [{"function": args}]}]},
    ]
    lines = [orjson.dumps(r | {"created_at": 600.0 + 60 * i}) for i, r in enumerate(recs)]
    (run / "rollout" / "records.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    rows = timeline(run)["per_minute"]
    assert [(r["minute"][-6:], r["trajectories"]) for r in rows] == [
        ("00:10Z", 1),
        ("00:11Z", 1),
    ]
