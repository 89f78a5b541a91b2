"""The pipeline and CLI with the scripted fake backend (control flow only: no model here)."""

from pathlib import Path

import orjson

from agentmill.store import iter_jsonl


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for _, line in iter_jsonl(path)]


def _cfg(tasks: Path, n: int = 2, replies=None) -> dict:
    return {
        "name": "t",
        "backends": {"teacher": {"type": "scripted", "replies": replies or ["the answer is 4"]}},
        "sources": [{"path": str(tasks)}],
        "rollout": {"n": n, "params": {"temperature": 0.5}},
    }


def test_run_writes_a_consistent_run_folder(tmp_path, cli, write_config, tasks_file) -> None:
    cfg = write_config(_cfg(tasks_file(5), n=3))
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", cfg, "--out", out)
    assert rc == 0, stdout
    trajs = _lines(out / "rollout" / "records.jsonl")
    assert len(trajs) == 15 and len({(t["task_id"], t["sample_index"]) for t in trajs}) == 15
    tasks = _lines(out / "source" / "records.jsonl")
    assert {t["task_id"] for t in trajs} == {t["id"] for t in tasks}
    assert all(
        t["messages"][-1]
        == {"role": "assistant", "content": "the answer is 4", "usage": t["usage"]}
        for t in trajs
    )
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["stages"]["rollout"]["done"] == 15 and manifest["stages"]["rollout"]["complete"]
    assert len(_lines(out / "calls.jsonl")) == 15
    assert (out / "config.yaml").exists()
    rc, stdout, _ = cli("status", out, "--json")
    status = orjson.loads(stdout)
    assert (status["done"], status["pending"], status["failed"], status["tasks"]) == (15, 0, {}, 5)


def test_rerun_resumes_tops_up_and_refuses_changes(tmp_path, cli, write_config, tasks_file) -> None:
    tasks = tasks_file(4)
    cfg = write_config(_cfg(tasks, n=2))
    out = tmp_path / "run"
    assert cli("run", cfg, "--out", out)[0] == 0
    rc, stdout, _ = cli("run", cfg, "--out", out)  # nothing left to do
    assert rc == 0 and "model calls 0" in stdout
    rc, stdout, _ = cli("run", cfg, "--out", out, "-c", "rollout.n=3")  # top-up adds only sample 2
    assert rc == 0 and "topped up: rollout.n: 2 -> 3" in stdout and "new 4" in stdout
    with tasks.open("a") as f:
        f.write('{"question": "What is 10 + 10?", "answer": "20"}\n')
    rc, stdout, _ = cli("run", cfg, "--out", out, "-c", "rollout.n=3")  # a new task: 3 samples
    assert rc == 0 and "new 3" in stdout
    assert len(_lines(out / "rollout" / "records.jsonl")) == 15
    rc, _, err = cli("run", cfg, "--out", out, "-c", "rollout.params.temperature=0.9")
    assert rc == 2 and "rollout.params.temperature: 0.5 -> 0.9" in err and "--new" in err
    rc, _, err = cli("run", cfg, "--out", out, "-c", "rollout.n=1")
    assert rc == 2 and "rollout.n: 3 -> 1" in err
    assert len(_lines(out / "rollout" / "records.jsonl")) == 15  # refusals lose nothing


def test_new_run_beside_the_old_one_is_served_from_the_cache(
    tmp_path, cli, write_config, tasks_file
) -> None:
    cfg = write_config(_cfg(tasks_file(3)))
    out = tmp_path / "run"
    assert cli("run", cfg, "--out", out)[0] == 0
    rc, stdout, _ = cli("run", cfg, "--out", out, "--new")
    assert rc == 0 and "model calls 0" in stdout and "cache hits 6" in stdout
    assert len(_lines(tmp_path / "run.2" / "rollout" / "records.jsonl")) == 6
    rc, stdout, _ = cli("run", cfg, "--out", out, "--new", "--no-cache")
    assert rc == 0 and "model calls 6" in stdout
    rc, stdout, _ = cli(
        "run", cfg, "--out", out, "--new", "-c", "seed=7"
    )  # a new seed: fresh samples
    assert rc == 0 and "model calls 6" in stdout


def test_bad_records_are_skipped_counted_and_strict_fails(
    tmp_path, cli, write_config, tasks_file
) -> None:
    tasks = tasks_file(3)
    with tasks.open("a") as f:
        f.write('{"question": "broken\n[1, 2]\n{"no_prompt_here": 1}\n')
    cfg = write_config(_cfg(tasks, n=1))
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", cfg, "--out", out)
    assert rc == 0 and "bad records 3" in stdout
    fails = _lines(out / "failures.jsonl")
    assert sorted(f["reason"] for f in fails) == ["invalid_json", "missing_field", "not_an_object"]
    assert all(f["stage"] == "source" and f["key"].startswith(str(tasks)) for f in fails)
    rc, _, err = cli("run", cfg, "--out", out, "--strict")
    assert rc == 2 and "3 bad record(s)" in err
    rc, _, err = cli("run", cfg, "--out", out, "--max-bad-fraction", "0.4")
    assert rc == 2 and "over max_bad_fraction 0.4" in err
    assert len(_lines(out / "rollout" / "records.jsonl")) == 3  # nothing already written is lost
    assert len(_lines(out / "failures.jsonl")) == 3  # re-reading the file adds no duplicates


def test_failed_calls_exit_1_and_are_retried_on_resume(
    tmp_path, cli, write_config, tasks_file
) -> None:
    cfg = write_config(_cfg(tasks_file(3), n=2, replies=["ok", {"fail": "http_500"}]))
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", cfg, "--out", out, "--no-cache")
    assert rc == 1 and "failed 3 (http_500)" in stdout
    status = orjson.loads(cli("status", out, "--json")[1])
    assert status["failed"] == {"http_500": 3} and status["done"] == 3
    rc, stdout, _ = cli("run", cfg, "--out", out, "--no-cache")  # a fresh process: 3 retried
    assert "model calls 3" in stdout
    done = {(t["task_id"], t["sample_index"]) for t in _lines(out / "rollout" / "records.jsonl")}
    assert len(done) == len(_lines(out / "rollout" / "records.jsonl"))  # no duplicates


def test_dry_run_and_limit(tmp_path, cli, write_config, tasks_file) -> None:
    cfg = write_config(_cfg(tasks_file(6)))
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", cfg, "--out", out, "--dry-run")
    assert rc == 0 and "trajectories 0/12" in stdout and "pending 12" in stdout
    assert not (out / "rollout" / "records.jsonl").exists()
    rc, stdout, _ = cli("run", cfg, "--out", out, "--limit", "2")
    assert rc == 0 and "trajectories 4/4" in stdout


def test_show_and_stats(tmp_path, cli, write_config, tasks_file) -> None:
    cfg = write_config(_cfg(tasks_file(2)))
    out = tmp_path / "run"
    cli("run", cfg, "--out", out)
    rc, stdout, _ = cli("show", out, "--index", "1")
    assert rc == 0 and "the answer is 4" in stdout and "What is" in stdout
    rc, _, err = cli("show", out, "--index", "9")
    assert rc == 2 and "out of range" in err
    stats = orjson.loads(cli("stats", out / "rollout" / "records.jsonl", "--json")[1])
    assert (
        stats["trajectories"] == 4 and stats["tasks"] == 2 and stats["stop_reason"] == {"answer": 4}
    )
    (tmp_path / "junk.jsonl").write_text("{}\nnot json\n")
    rc, _, err = cli("stats", tmp_path / "junk.jsonl")
    assert rc == 2 and "junk.jsonl:2 is not valid JSON" in err


def test_bad_input_is_one_line_and_exit_2(tmp_path, cli, write_config, tasks_file) -> None:
    good = _cfg(tasks_file(2))
    cases = {
        "unknown key": (
            {**good, "rollout": {"n": 1, "temprature": 1}},
            "unknown key 'rollout.temprature'",
        ),
        "bad value": (
            {**good, "rollout": {"n": "many"}},
            "rollout.n: input should be a valid integer",
        ),
        "missing task file": (
            {**good, "sources": [{"path": str(tmp_path / "nope.jsonl")}]},
            "task file not found",
        ),
        "unreachable server": (
            {
                **good,
                "backends": {
                    "teacher": {
                        "type": "openai",
                        "base_url": "http://127.0.0.1:9/v1",
                        "model": "m",
                        "max_retries": 0,
                    }
                },
            },
            "cannot reach http://127.0.0.1:9/v1: connection refused; start the server",
        ),
    }
    for name, (cfg, message) in cases.items():
        rc, stdout, err = cli(
            "run", write_config(cfg, f"{name.replace(' ', '_')}.yaml"), "--out", tmp_path / "run"
        )
        assert rc == 2, name
        assert message in err, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)


def test_models_lists_the_embedded_model(cli) -> None:
    rc, stdout, _ = cli("models")
    assert rc == 0 and "smollm2-135m" in stdout


def test_injected_failures_are_marked_on_the_trajectories(tmp_path, cli, write_config) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"question": "2+2?", "answer": "4"}\n{"question": "3+3?", "answer": "6"}\n')
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}
    cfg = _cfg(tasks, n=1, replies=[call, call, "4"])
    cfg["backends"]["teacher"]["max_concurrency"] = 1
    cfg["rollout"] |= {"tools": ["calculator"], "agent": {"inject_tool_failure": 1.0}}
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0, stdout
    trajs = _lines(out / "rollout" / "records.jsonl")
    assert len(trajs) == 2
    for t in trajs:
        tool_msgs = [m for m in t["messages"] if m["role"] == "tool"]
        assert tool_msgs[0]["content"].startswith("Error: the tool is temporarily unavailable")
        assert t["metadata"]["injected_failure"] == tool_msgs[0]["tool_call_id"]
        assert t["metadata"]["recovered"] == (tool_msgs[-1]["content"] == "4")


def test_first_tool_choice_expected_forces_what_each_task_expects(
    tmp_path, cli, write_config, monkeypatch
) -> None:
    """`first_tool_choice: expected`: the expected tool by name, "none" where no call is
    right, unset (the params' "auto") where the task has no opinion; later steps unforced."""
    from agentmill.backends.scripted import ScriptedBackend

    seen: list[tuple[str, str]] = []
    complete = ScriptedBackend.complete

    async def spy(self, messages, tools, params):
        seen.append((messages[-1].text if messages[-1].role == "user" else "", params.tool_choice))
        return await complete(self, messages, tools, params)

    monkeypatch.setattr(ScriptedBackend, "complete", spy)
    tasks = tmp_path / "t.jsonl"
    rows = [
        {"question": "calc", "answer": "4", "expected_calls": [{"name": "calculator"}]},
        {"question": "none", "answer": "4", "expected_calls": []},
        {"question": "free", "answer": "4"},
    ]
    tasks.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    call = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}
    cfg = _cfg(tasks, n=1, replies=["4"])
    cfg["backends"]["teacher"]["max_concurrency"] = 1
    cfg["rollout"] |= {"tools": ["calculator"], "agent": {"first_tool_choice": "expected"}}
    rc, stdout, _ = cli("run", write_config(cfg), "--out", tmp_path / "run")
    assert rc == 0, stdout
    assert sorted(seen) == [("calc", "calculator"), ("free", "auto"), ("none", "none")]
    # a forced first call, then the answer step goes back to the params' choice
    seen.clear()
    cfg["backends"]["teacher"]["replies"] = [call, "4"]
    tasks.write_bytes(orjson.dumps(rows[0]) + b"\n")
    rc, stdout, _ = cli("run", write_config(cfg, "r2.yaml"), "--out", tmp_path / "run2")
    assert rc == 0, stdout
    assert [c for _, c in seen] == ["calculator", "auto"]
