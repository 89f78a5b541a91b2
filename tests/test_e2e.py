"""End to end with the REAL embedded model, in-process and through the real loopback server:
the run folder, the stage stats, the funnel and the SFT file must agree with each other."""

import orjson
import pytest

from agentmill.store import iter_jsonl

pytestmark = pytest.mark.model

TASKS = [
    {
        "question": "Ana has 12 apples and buys 30 more. How many apples does she have?",
        "answer": "42",
    },
    {"question": "A box holds 6 rows of 7 eggs. How many eggs are in the box?", "answer": "42"},
    {"question": "Ben had 100 stamps and gave away 58. How many are left?", "answer": "42"},
]


def _lines(path):
    return [orjson.loads(x) for _, x in iter_jsonl(path)] if path.exists() else []


def _config(tmp_path, backend: dict) -> dict:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(orjson.dumps(t) + b"\n" for t in TASKS))
    return {
        "name": "e2e",
        "sources": [{"path": str(tasks)}],
        "backends": {"teacher": backend},
        "rollout": {
            "n": 2,
            "tools": ["calculator"],
            "system_prompt": "Call the calculator with the expression, then reply with the number.",
            "agent": {"max_steps": 3, "first_tool_choice": "required"},
            "params": {"temperature": 0.8, "max_tokens": 48, "seed": 1},
        },
        "score": {"rewards": ["math", "format"]},
        "filter": {"min_reward": 1.0, "reward": "math"},
        "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
    }


def _check_consistent(out) -> None:
    trajs = _lines(out / "rollout" / "records.jsonl")
    scored = _lines(out / "score" / "records.jsonl")
    kept = _lines(out / "filter" / "records.jsonl")
    dropped = _lines(out / "filter" / "dropped.jsonl")
    sft = _lines(out / "export" / "sft.jsonl")
    calls = _lines(out / "calls.jsonl")
    funnel = orjson.loads((out / "manifest.json").read_bytes())["stages"]["funnel"]
    assert len(trajs) == len(scored) == 6 == funnel["trajectories"]
    assert {t["id"] for t in trajs} == {t["id"] for t in scored}
    assert all("math" in t["rewards"] and "format" in t["rewards"] for t in scored)
    assert len(calls) == sum(t["agent"]["steps"] for t in trajs)  # one logged call per step
    correct = [t for t in scored if t["rewards"]["math"] == 1.0]
    assert {t["id"] for t in kept} == {t["id"] for t in correct}
    assert len(kept) + len(dropped) == 6 and funnel["kept"] == len(kept)
    assert {d["reason"] for d in dropped} <= {"reward_below_min:math"}
    assert [r["id"] for r in sft] == [t["id"] for t in kept]
    assert funnel["exported"] == {"export/sft.jsonl": len(sft)}
    # every first step was forced into a calculator call, well-formed unless max_tokens cut it
    # (at temperature 0.8 the expression string may ramble past 48 tokens; that call stays
    # unclosed and is reported malformed, never guessed)
    firsts = [t["messages"][2] for t in trajs]  # system, user, first assistant turn
    assert all(m["tool_calls"][0]["function"]["name"] == "calculator" for m in firsts)
    whole = [isinstance(m["tool_calls"][0]["function"].get("arguments"), dict) for m in firsts]
    assert all(
        ok or m["usage"]["completion_tokens"] == 48 for ok, m in zip(whole, firsts, strict=True)
    )
    assert sum(whole) >= 3
    for rec in sft:
        assert rec["tools"][0]["function"]["name"] == "calculator"
        roles = [m["role"] for m in rec["messages"]]
        assert roles[:3] == ["system", "user", "assistant"] and "tool" in roles
        assert roles[-1] == "assistant"


def test_e2e_embedded_model(tmp_path, cli, write_config, smollm_path) -> None:
    cfg = write_config(_config(tmp_path, {"type": "local", "model": "smollm2-135m"}))
    rc, stdout, stderr = cli("run", cfg, "--out", tmp_path / "run", "--no-cache")
    assert rc == 0, stdout + stderr
    assert "funnel" in stdout and "with a well-formed call" in stdout
    _check_consistent(tmp_path / "run")
    report = (tmp_path / "run" / "report.html").read_text()  # written at the end of the run
    assert "records through the pipeline" in report and 'data-chart="reward-math"' in report


def test_e2e_through_loopback_server(
    tmp_path, cli, write_config, loopback_server, smollm_path
) -> None:
    backend = {
        "type": "openai",
        "base_url": loopback_server,
        "model": str(smollm_path),
        "tool_protocol": "text",
        "max_concurrency": 4,
    }
    cfg = _config(tmp_path, backend)
    # transformers serve cannot force a call: the first step is free there
    cfg["rollout"]["agent"].pop("first_tool_choice")
    rc, stdout, stderr = cli("run", write_config(cfg), "--out", tmp_path / "run", "--no-cache")
    assert rc == 0, stdout + stderr
    out = tmp_path / "run"
    trajs = _lines(out / "rollout" / "records.jsonl")
    scored = _lines(out / "score" / "records.jsonl")
    kept = _lines(out / "filter" / "records.jsonl")
    sft = _lines(out / "export" / "sft.jsonl")
    assert len(trajs) == len(scored) == 6
    assert len(_lines(out / "calls.jsonl")) == sum(t["agent"]["steps"] for t in trajs)
    assert [r["id"] for r in sft] == [t["id"] for t in kept if not _malformed(t)]


def _malformed(t) -> bool:
    return any(
        c["function"].get("arguments") is None
        for m in t["messages"]
        for c in m.get("tool_calls") or []
    )
