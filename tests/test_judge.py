"""The LLM judge: verdict parsing, failures as ERROR, the `judge` command and the judge stage.

Parsing and stage control flow use the SCRIPTED FAKE backend (a fake, not a model). The
judge itself runs on the REAL embedded model behind a real `transformers serve` on loopback,
and transport faults and kill/resume on the real `openai` backend over HTTP to the stub server.
"""

import asyncio
import doctest
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson
import pytest
import yaml

from agentmill.backends.instrumented import Instrumented
from agentmill.backends.scripted import ScriptedBackend
from agentmill.config import ScriptedBackendConfig
from agentmill.records import Message, Trajectory
from agentmill.scoring import judge as judge_mod
from agentmill.scoring.judge import judge_messages, judge_trajectory, parse_verdict, user_prompt
from agentmill.scoring.judge_config import JudgeConfig
from agentmill.store import iter_jsonl
from agentmill.testing.stub_server import kill_when_a_call_hangs, run_stub_in_thread

GOOD = '{"reason": "complete and on topic", "result": "GOOD"}'
BAD = '{"reason": "does not answer", "result": "BAD"}'


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


def _traj(i: int, query: str | None = None, answer: str = "The answer is 42.") -> Trajectory:
    return Trajectory(
        id=f"t{i}",
        task_id=f"task{i}",
        messages=[
            Message(role="user", content=query or f"What is {i} times 7?"),
            Message(role="assistant", content=answer),
        ],
        final_answer=answer,
    )


def _write(path: Path, trajs: list[Trajectory]) -> Path:
    path.write_bytes(b"".join(t.to_json() + b"\n" for t in trajs))
    return path


# ---------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        (GOOD, "GOOD"),
        ("```json\n" + BAD + "\n```", "BAD"),
        ("Let me check.\n" + GOOD + "\nThat is my verdict.", "GOOD"),
        ("{'reason': 'fine', 'result': 'good'}", "GOOD"),
        ('{"result": "Bad.", "explanation": "off topic"}', "BAD"),
        ('{"verdict": "GOOD"}', "GOOD"),
        ("<think>maybe BAD? no</think>\n" + GOOD, "GOOD"),
        ("Result: GOOD", "GOOD"),
        ("**BAD**", "BAD"),
        ("verdict - good", "GOOD"),
        ("Verdict: **bad** because it is empty", "BAD"),
        ("GOOD", "GOOD"),
        ("bad.", "BAD"),
        ('{"reason": "x", "result": "GOOD"} {"reason": "y", "result": "BAD"}', "ERROR"),
        ("GOOD or BAD? hard to tell", "ERROR"),
        ("Result: GOOD. Final verdict: BAD", "ERROR"),
        ("The answer looks good to me", "ERROR"),
        ("", "ERROR"),
        ('{"reason": "no result key"}', "ERROR"),
        ('{"result": "MAYBE"}', "ERROR"),
        ("<think>it is GOOD", "ERROR"),  # only thinking, cut off: nothing was concluded
    ],
)
def test_parse_verdict(reply: str, verdict: str) -> None:
    got, reason = parse_verdict(reply)
    assert got == verdict, reply
    if verdict == "ERROR":
        assert reason.startswith("unparseable")


def test_module_doctests() -> None:
    import agentmill.astuner
    import agentmill.sources.traces

    for mod in (judge_mod, agentmill.astuner, agentmill.sources.traces):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__


def test_prompt_has_rubric_query_steps_and_answer() -> None:
    cfg = JudgeConfig(custom_rubrics=["Answers must state units.", "- Never mention prices"])
    t = Trajectory(
        id="a",
        task_id="t",
        messages=[
            Message(role="user", content="How far is the moon?"),
            Message.model_validate(
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c", "function": {"name": "search", "arguments": {"q": "moon"}}}
                    ],
                }
            ),
            Message(role="tool", tool_call_id="c", content="384,400 km"),
            Message(role="assistant", content="About 384,400 km."),
        ],
    )
    system, user = judge_messages(t, cfg)
    assert "wrong language" not in system.text and "language of the query" in system.text
    assert "- Answers must state units." in system.text and "- Never mention prices" in system.text
    assert "How far is the moon?" in user.text and "About 384,400 km." in user.text
    assert 'call search({"q":"moon"})' in user.text and "result: 384,400 km" in user.text
    hidden = user_prompt(t, cfg.model_copy(update={"show_steps": False}))
    assert "search" not in hidden and "About 384,400 km." in hidden


def _scripted(replies: list) -> Instrumented:
    fake = ScriptedBackend("judge", ScriptedBackendConfig(replies=replies))
    return Instrumented(fake, "fp", 0)


def test_verdicts_from_a_scripted_fake_keep_the_raw_reply() -> None:
    replies = ["Sure.\n```json\n" + GOOD + "\n```", "Result: BAD", "I cannot decide."]
    backend = _scripted(replies)

    async def go():
        return [await judge_trajectory(backend, _traj(i), JudgeConfig()) for i in range(3)]

    verdicts = asyncio.run(go())
    assert [v.verdict for v in verdicts] == ["GOOD", "BAD", "ERROR"]
    assert [v.raw for v in verdicts] == replies
    assert verdicts[0].reason == "complete and on topic" and verdicts[2].reason == "unparseable"


def test_failed_call_and_missing_answer() -> None:
    backend = _scripted([{"fail": "http_503"}])

    async def go():
        failed = await judge_trajectory(backend, _traj(1), JudgeConfig())
        empty = await judge_trajectory(backend, _traj(2, answer=""), JudgeConfig())
        return failed, empty

    failed, empty = asyncio.run(go())
    assert failed.verdict == "ERROR" and "http_503" in failed.reason and failed.raw is None
    assert empty.verdict == "BAD" and empty.reason == judge_mod.NO_ANSWER
    assert len(backend.backend.calls) == 1  # the empty answer was never sent


def test_structured_judge_forces_the_verdict_tool() -> None:
    seen: list[tuple] = []

    class Spy(ScriptedBackend):
        async def complete(self, messages, tools, params):
            seen.append((tools, params.tool_choice))
            return await super().complete(messages, tools, params)

    call = {"name": "verdict", "arguments": {"reason": "right number", "result": "GOOD"}}
    text = '<tool_call>{"name": "verdict", "arguments": {"reason": "x", "result": "bad"}}'
    replies = [{"tool_calls": [call]}, text + "</tool_call>", "Result: GOOD", "42"]
    backend = Instrumented(Spy("judge", ScriptedBackendConfig(replies=replies)), "fp", 0)
    cfg = JudgeConfig(structured=True)

    async def go():
        return [await judge_trajectory(backend, _traj(i), cfg) for i in range(4)]

    verdicts = asyncio.run(go())
    # a native call, a text-protocol call (the local backend), a plain reply, the query answered
    assert [v.verdict for v in verdicts] == ["GOOD", "BAD", "GOOD", "ERROR"]
    assert verdicts[0].reason == "right number"
    assert all(c == "verdict" and t == [judge_mod.VERDICT_TOOL] for t, c in seen)


@pytest.mark.model
def test_structured_judge_makes_the_embedded_model_give_verdicts(smollm_path) -> None:
    """Unstructured, SmolLM2-135M answers the query instead of judging (every verdict an
    ERROR); forced through the verdict tool by constrained decoding, each reply parses."""
    from agentmill.backends.local import LocalBackend
    from agentmill.config import LocalBackendConfig

    backend = Instrumented(
        LocalBackend("judge", LocalBackendConfig(model=str(smollm_path))), "fp", 0
    )
    cfg = JudgeConfig(structured=True, max_tokens=48)

    async def go():
        try:
            return [await judge_trajectory(backend, _traj(i), cfg) for i in range(2)]
        finally:
            await backend.aclose()

    verdicts = asyncio.run(go())
    assert all(v.verdict in ("GOOD", "BAD") for v in verdicts), verdicts
    assert all('"name": "verdict"' in (v.raw or "") for v in verdicts)


# ---------------------------------------------------------------- the real model
@pytest.mark.model
def test_judge_command_with_the_real_model_on_loopback(
    tmp_path, cli, loopback_server, smollm_path
) -> None:
    src = _write(tmp_path / "in.jsonl", [_traj(i) for i in range(3)])
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "backends": {
                    "judge": {
                        "type": "openai",
                        "base_url": loopback_server,
                        "model": str(smollm_path),
                        "tool_protocol": "text",
                    }
                },
                "judge": {"max_tokens": 48, "custom_rubrics": "The answer must be a number."},
            }
        )
    )
    out = tmp_path / "out.jsonl"
    rc, stdout, stderr = cli("judge", src, "-o", out, "--config", cfg)
    kept, dropped = _lines(out), _lines(tmp_path / "out.dropped.jsonl")
    errors = _lines(tmp_path / "out.errors.jsonl")
    verdicts = [t["verdicts"][-1] for t in kept] + [d["record"]["verdicts"][-1] for d in dropped]
    verdicts += [e["verdict"] for e in errors]
    assert len(verdicts) == 3, stdout + stderr
    assert all(v["verdict"] in ("GOOD", "BAD", "ERROR") for v in verdicts)
    assert all(isinstance(v["raw"], str) for v in verdicts)  # the model's own reply, kept
    assert all(v["judge"] == str(smollm_path) for v in verdicts)
    assert rc == (1 if errors else 0), stdout + stderr
    assert f"GOOD {len(kept)}" in stdout and f"ERROR {len(errors)}" in stdout


# ---------------------------------------------------------------- failures over HTTP
def test_failing_endpoint_is_recorded_as_error_and_retried(tmp_path, cli) -> None:
    trajs = [_traj(0), _traj(1, query="FAULT=500x99 please"), _traj(2, query="FAULT=hangx1 x")]
    src = _write(tmp_path / "in.jsonl", trajs)
    cfg = tmp_path / "judge.yaml"
    with run_stub_in_thread(hang_s=5) as (server, url):
        for t in trajs:
            server.add_reply(user_prompt(t, JudgeConfig()), {"content": GOOD})
        backend = {"type": "openai", "base_url": url, "model": "stub", "max_retries": 0}
        backend["timeout_s"] = 0.5
        cfg.write_text(yaml.safe_dump({"backends": {"j": backend}, "judge": {"backend": "j"}}))
        out = tmp_path / "out.jsonl"
        rc, stdout, _ = cli("judge", src, "-o", out, "--config", cfg)
        assert rc == 1 and "GOOD 1" in stdout and "ERROR 2" in stdout
        assert [t["id"] for t in _lines(out)] == ["t0"]
        errors = {e["id"]: e["verdict"] for e in _lines(tmp_path / "out.errors.jsonl")}
        assert set(errors) == {"t1", "t2"}
        assert "http_500" in errors["t1"]["reason"] and "timeout" in errors["t2"]["reason"]
        assert all(e["verdict"] == "ERROR" and e.get("raw") is None for e in errors.values())
        # the re-run judges only the two ERROR records; the hang is over, the 500s are not
        before = len(server.log)
        rc, stdout, _ = cli("judge", src, "-o", out, "--config", cfg)
        assert len(server.log) - before == 2
        assert (
            rc == 1 and "GOOD 1" in stdout and "ERROR 1" in stdout and "already judged 1" in stdout
        )
        assert sorted(t["id"] for t in _lines(out)) == ["t0", "t2"]


def test_unreachable_endpoint_is_one_line_error(tmp_path, cli) -> None:
    from model_fixtures import free_port

    src = _write(tmp_path / "in.jsonl", [_traj(0)])
    url = f"http://127.0.0.1:{free_port()}/v1"
    rc, _, stderr = cli("judge", src, "-o", tmp_path / "o.jsonl", "--base-url", url, "--model", "m")
    assert rc == 2 and "cannot reach" in stderr and len(stderr.strip().splitlines()) == 1
    rc, _, stderr = cli("judge", src, "-o", tmp_path / "o.jsonl")
    assert rc == 2 and "--base-url" in stderr and "--embedded" in stderr


def test_killed_judge_resumes_without_paying_twice(tmp_path) -> None:
    n, k = 6, 3
    trajs = [_traj(i, query=f"q{i} FAULT=hangx1" if i == k else f"q{i}") for i in range(n)]
    src = _write(tmp_path / "in.jsonl", trajs)
    out = tmp_path / "out.jsonl"
    with run_stub_in_thread(hang_s=60) as (server, url):
        for i, t in enumerate(trajs):
            server.add_reply(user_prompt(t, JudgeConfig()), {"content": GOOD if i % 2 else BAD})
        cmd = [sys.executable, "-m", "agentmill", "judge", str(src), "-o", str(out)]
        cmd += ["--base-url", url, "--model", "stub", "--concurrency", "1"]
        kill_when_a_call_hangs(cmd, server)
        judged = len(_lines(out)) + len(_lines(tmp_path / "out.dropped.jsonl"))
        assert judged == k  # killed while the (k+1)-th call was in flight
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        assert done.returncode == 0, done.stderr
    paid = Counter(e["key"] for e in server.log if e["outcome"] == "ok")
    assert len(paid) == n and set(paid.values()) == {1}  # every verdict paid for exactly once
    assert len(server.log) == n + 1  # plus the one call the kill cut off
    kept, dropped = _lines(out), _lines(tmp_path / "out.dropped.jsonl")
    assert sorted(t["id"] for t in kept) == ["t1", "t3", "t5"]
    assert sorted(d["record"]["id"] for d in dropped) == ["t0", "t2", "t4"]
    assert all(d["reason"] == "judge_bad" for d in dropped)


# ---------------------------------------------------------------- the judge stage of a run
def _run_cfg(tasks: Path, judge: dict, **extra) -> dict:
    return {
        "name": "j",
        "sources": [{"path": str(tasks)}],
        "backends": {
            "teacher": {"type": "scripted", "replies": ["4", "5"]},
            # a SCRIPTED FAKE judge: the stage's control flow is under test, not a model
            "judge": {"type": "scripted", "replies": [GOOD, BAD, "no idea"], "max_concurrency": 1},
        },
        "rollout": {"n": 2},
        "judge": {"max_concurrency": 1, **judge},
        "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
        **extra,
    }


def _judge_calls(run: Path) -> Counter:
    lines = _lines(run / "calls.jsonl")
    return Counter(c["cache_hit"] for c in lines if c["backend"] == "judge")


def test_judge_stage_is_incremental_and_keyed_by_trajectory(
    tmp_path, cli, write_config, tasks_file
) -> None:
    tasks = tasks_file(3)
    out = tmp_path / "run"
    cfg = _run_cfg(tasks, {}, cache={"enabled": False})
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0, stdout
    verdicts = _lines(out / "judge" / "verdicts.jsonl")
    assert Counter(v["verdict"]["verdict"] for v in verdicts) == {"GOOD": 2, "BAD": 2, "ERROR": 2}
    kept = _lines(out / "judge" / "records.jsonl")
    assert len(kept) == 2 and all(t["verdicts"][-1]["verdict"] == "GOOD" for t in kept)
    assert len(_lines(out / "export" / "sft.jsonl")) == 2
    drops = Counter(d["reason"] for d in _lines(out / "judge" / "dropped.jsonl"))
    assert drops == {"judge_bad": 2, "judge_error": 2}
    funnel = orjson.loads((out / "manifest.json").read_bytes())["stages"]["funnel"]
    assert funnel["dropped"] == {"judge_bad": 2, "judge_error": 2} and funnel["kept"] == 2
    assert "dropped judge_error: 2" in stdout
    assert {f["reason"] for f in _lines(out / "failures.jsonl")} == {"judge_error"}
    # re-run: only the two ERRORs are judged again (the fake now answers GOOD, BAD)
    rc, _, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0 and _judge_calls(out)[False] == 8
    latest = {v["id"]: v["verdict"]["verdict"] for v in _lines(out / "judge" / "verdicts.jsonl")}
    assert Counter(latest.values()) == {"GOOD": 3, "BAD": 3}
    # `keep` changes which verdicts pass, never the verdicts: no call, no reset
    cfg["judge"]["keep"] = ["good", "bad"]
    rc, _, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0 and _judge_calls(out)[False] == 8
    assert len(_lines(out / "judge" / "records.jsonl")) == 6
    # a new rubric re-judges everything; the old verdicts are moved aside, not deleted
    cfg["judge"]["custom_rubrics"] = "Answers must be numbers."
    rc, _, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0 and _judge_calls(out)[False] == 14
    assert len(list(out.glob("judge.*"))) == 1


def test_judge_stage_uses_the_cache_unless_no_cache(
    tmp_path, cli, write_config, tasks_file
) -> None:
    cfg = write_config(_run_cfg(tasks_file(2), {}))
    first, second, third = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert cli("run", cfg, "--out", first)[0] == 0
    assert _judge_calls(first) == {False: 4}
    assert cli("run", cfg, "--out", second)[0] == 0
    # a new run folder finds every reply in the cache, the unparseable one included
    assert _judge_calls(second) == {True: 4}
    assert cli("run", cfg, "--out", third, "--no-cache")[0] == 0
    assert _judge_calls(third) == {False: 4}


def test_judge_backend_must_exist(tmp_path, cli, write_config, tasks_file) -> None:
    cfg = _run_cfg(tasks_file(1), {"backend": "missing"})
    rc, _, stderr = cli("run", write_config(cfg), "--out", tmp_path / "r")
    assert rc == 2 and "judge.backend 'missing' is not defined in backends" in stderr
