"""Score -> filter -> export in a run and on files (scripted FAKE backend: control flow)."""

import orjson

from agentmill.store import iter_jsonl


def _lines(path):
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


def _cfg(tasks, rewards, **extra) -> dict:
    calc = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2 * 2"}}]}
    return {
        "name": "st",
        "sources": [{"path": str(tasks)}],
        "backends": {
            "teacher": {"type": "scripted", "replies": [calc, "4", calc, "5"], "max_concurrency": 1}
        },
        "rollout": {"n": 2, "tools": ["calculator"]},
        "score": {"rewards": rewards},
        "filter": {"min_reward": 1.0, "reward": "math"},
        "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
        **extra,
    }


def test_run_scores_filters_exports_and_rescores_without_resampling(
    tmp_path, cli, write_config
) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        '{"question": "What is 2 * 2?", "answer": "4"}\n{"question": "2+2?", "answer": "4"}\n'
    )
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", write_config(_cfg(tasks, ["math"])), "--out", out)
    assert rc == 0, stdout
    scored = _lines(out / "score" / "records.jsonl")
    assert sorted(t["rewards"]["math"] for t in scored) == [0.0, 0.0, 1.0, 1.0]
    assert all(t["messages"][-2]["content"] == "4" for t in scored)  # the calculator really ran
    kept, sft = _lines(out / "filter" / "records.jsonl"), _lines(out / "export" / "sft.jsonl")
    assert len(kept) == len(sft) == 2 and {r["id"] for r in sft} == {t["id"] for t in kept}
    assert all(
        d["reason"] == "reward_below_min:math" for d in _lines(out / "filter" / "dropped.jsonl")
    )
    assert sft[0]["tools"][0]["function"]["name"] == "calculator"
    assert sft[0]["messages"][1]["tool_calls"][0]["function"]["arguments"] == {
        "expression": "2 * 2"
    }
    # a new reward re-scores (old score folder kept aside) without a single model call
    rc, stdout, _ = cli("run", write_config(_cfg(tasks, ["math", "format"])), "--out", out)
    assert rc == 0 and "model calls 0" in stdout
    assert all(
        set(t["rewards"]) == {"math", "format"} for t in _lines(out / "score" / "records.jsonl")
    )
    assert len(list(out.glob("score.*"))) == 1


def test_score_filter_export_commands_on_files(tmp_path, cli, write_config) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"question": "What is 2 * 2?", "answer": "4"}\n')
    out = tmp_path / "run"
    cfg = _cfg(tasks, [])
    del cfg["filter"], cfg["export"]
    assert cli("run", write_config(cfg), "--out", out)[0] == 0
    trajs = out / "rollout" / "records.jsonl"
    with trajs.open("ab") as f:
        f.write(b'{"not": "a trajectory"}\n')
    rc, stdout, _ = cli(
        "score", trajs, "-o", tmp_path / "s.jsonl", "--reward", "math", "--reward", "format"
    )
    assert rc == 0 and "scored 2" in stdout and "not_a_trajectory: 1" in stdout
    assert {tuple(sorted(t["rewards"])) for t in _lines(tmp_path / "s.jsonl")} == {
        ("format", "math")
    }
    rc, stdout, _ = cli(
        "filter",
        tmp_path / "s.jsonl",
        "-o",
        tmp_path / "k.jsonl",
        "--min-reward",
        "1",
        "--reward",
        "math",
    )
    assert rc == 0 and "kept 1" in stdout and "reward_below_min:math: 1" in stdout
    assert len(_lines(tmp_path / "k.dropped.jsonl")) == 1
    rc, stdout, _ = cli(
        "export", tmp_path / "k.jsonl", "--format", "trl-sft", "-o", tmp_path / "sft.jsonl"
    )
    assert rc == 0 and len(_lines(tmp_path / "sft.jsonl")) == 1
    rc, _, err = cli("export", tmp_path / "k.jsonl", "--format", "csv", "-o", tmp_path / "x")
    assert rc == 2 and "unknown export format" in err
    rc, _, err = cli("score", trajs, "-o", tmp_path / "x.jsonl", "--reward", "vibes")
    assert rc == 2 and "--reward" in err
    rc, _, err = cli("score", trajs, "-o", tmp_path / "x.jsonl", "--reward", "math", "--strict")
    assert rc == 2 and "not_a_trajectory" in err


def test_export_formats_from_the_command_line(tmp_path, cli, write_config) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"question": "What is 2 * 2?", "answer": "4"}\n')
    out = tmp_path / "run"
    cfg = _cfg(tasks, ["math"])
    del cfg["filter"]
    assert cli("run", write_config(cfg), "--out", out)[0] == 0
    scored = out / "score" / "records.jsonl"
    rc, stdout, _ = cli(
        "export", scored, "--format", "sharegpt", "-o", tmp_path / "sg" / "data.json"
    )
    assert rc == 0 and "exported 2" in stdout
    info = orjson.loads((tmp_path / "sg" / "dataset_info.json").read_bytes())
    assert info["data"]["file_name"] == "data.json" and info["data"]["formatting"] == "sharegpt"
    conv = _lines(tmp_path / "sg" / "data.json")[0]["conversations"]
    assert [c["from"] for c in conv][:3] == ["human", "function_call", "observation"]
    rc, stdout, _ = cli("export", scored, "--format", "trl-dpo", "-o", tmp_path / "dpo.jsonl")
    pairs = _lines(tmp_path / "dpo.jsonl")
    assert rc == 0 and len(pairs) == 1  # one correct and one wrong sample of the same task
    assert pairs[0]["chosen"][-1]["content"] == "4" and pairs[0]["rejected"][-1]["content"] == "5"
    assert pairs[0]["prompt"][-1]["role"] in ("user", "tool")
    for fmt in ("react", "trajectory"):
        rc, stdout, _ = cli("export", scored, "--format", fmt, "-o", tmp_path / f"{fmt}.jsonl")
        assert rc == 0 and len(_lines(tmp_path / f"{fmt}.jsonl")) == 2, fmt


def test_valid_tool_calls_only_drops_protocol_debris(tmp_path, cli, write_config) -> None:
    """An answer that imitates a tool response ("4\\n</tool_response>") scores as correct but
    must never become training data; the drop is counted under its own reason."""
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"question": "2*2?", "answer": "4"}\n')
    cfg = _cfg(tasks, ["math"])
    calc = cfg["backends"]["teacher"]["replies"][0]
    cfg["backends"]["teacher"]["replies"] = [calc, "4\n</tool_response>", calc, "4"]
    cfg["filter"]["valid_tool_calls_only"] = True
    rc, stdout, _ = cli("run", write_config(cfg), "--out", tmp_path / "run")
    assert rc == 0, stdout
    scored = _lines(tmp_path / "run" / "score" / "records.jsonl")
    assert [t["rewards"]["math"] for t in scored] == [1.0, 1.0]
    (kept,) = _lines(tmp_path / "run" / "filter" / "records.jsonl")
    assert kept["final_answer"] == "4"
    stats = orjson.loads((tmp_path / "run" / "filter" / "stats.json").read_bytes())
    assert stats["dropped"] == {"protocol_tags_in_text": 1}


def test_carry_joins_an_earlier_runs_kept_records(tmp_path, cli, write_config) -> None:
    """`carry`: run B's data draws on what run A's filter kept (a flywheel's `accumulate`),
    with A's tasks for the balance key, bounded by `balance.max_total`; a re-run of B neither
    drops nor repeats them."""
    first = tmp_path / "a.jsonl"
    first.write_text('{"question": "What is 2 * 2?", "answer": "4"}\n')
    run_a = _cfg(first, ["math"])
    run_a["backends"]["teacher"]["replies"][3] = "4"  # both of A's samples right
    assert cli("run", write_config(run_a, "a.yaml"), "--out", tmp_path / "a")[0] == 0
    kept_a = {t["id"] for t in _lines(tmp_path / "a" / "filter" / "records.jsonl")}
    assert len(kept_a) == 2
    second = tmp_path / "b.jsonl"
    second.write_text('{"question": "What is 3 + 4?", "answer": "7"}\n')
    calc = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "3 + 4"}}]}
    cfg = _cfg(second, ["math"], carry=["a"])  # relative to the config's folder
    cfg["backends"]["teacher"]["replies"] = [calc, "7", calc, "8"]
    cfg["balance"] = {
        "key": "task.ground_truth",
        "mode": "proportions",
        "proportions": {"4": 0.5, "7": 0.5},
        "allow_upsample": True,
        "max_total": 2,  # of 3 kept: one per key
    }
    for _ in range(2):
        rc, stdout, err = cli("run", write_config(cfg, "b.yaml"), "--out", tmp_path / "b")
        assert rc == 0, stdout + err
        assert "carried from earlier runs" in stdout
        kept = _lines(tmp_path / "b" / "filter" / "records.jsonl")
        # B's own wrong "8" dropped, A's two right answers joined, each once
        assert sorted(t["final_answer"] for t in kept) == ["4", "4", "7"]
        assert kept_a <= {t["id"] for t in kept}
        # A's task was found: its key is "4", not "none" (which the proportions would drop)
        sft = _lines(tmp_path / "b" / "export" / "sft.jsonl")
        assert sorted(r["messages"][-1]["content"] for r in sft) == ["4", "7"]
        funnel = orjson.loads((tmp_path / "b" / "manifest.json").read_bytes())["stages"]["funnel"]
        assert funnel["carried"] == 2 and funnel["kept"] == 3
    # a folder with nothing kept to carry, and the run's own folder: one line, exit 2
    bare = _cfg(first, ["math"])
    del bare["filter"]
    assert cli("run", write_config(bare, "c.yaml"), "--out", tmp_path / "c")[0] == 0
    for folder, says in (("c", "has no kept records"), ("b", "this run's own folder")):
        cfg["carry"] = [folder]
        rc, _, err = cli("run", write_config(cfg, "b.yaml"), "--out", tmp_path / "b")
        assert rc == 2 and says in err and len(err.strip().splitlines()) == 1, err
