"""`agentmill eval`: the figures on a hand-made run folder (worked out by hand), and two models
side by side with the real embedded model through the `local` backend."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from agentmill.evaluation import eval_config, figures, wilson


def _call(name: str, args: dict | None) -> dict:
    fn = {"name": name, "arguments": args} if args is not None else {"name": name}
    return {"id": "c", "type": "function", "function": fn}


def _traj(task: str, calls: list[dict], rewards: dict, steps: int, tokens: int) -> dict:
    messages = [{"role": "user", "content": "q"}]
    if calls:
        messages.append({"role": "assistant", "tool_calls": calls})
    messages.append({"role": "assistant", "content": "a"})
    return {
        "id": task + "-0",
        "task_id": task,
        "messages": messages,
        "rewards": rewards,
        "agent": {"steps": steps},
        "usage": {"completion_tokens": tokens},
    }


def test_figures_match_the_hand_count(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "source").mkdir(parents=True)
    (run / "score").mkdir()
    add = {"name": "add", "arguments": {"a": 1, "b": 2}}
    tasks = [
        {"id": "t1", "expected_calls": [add]},  # right tool, right arguments
        {"id": "t2", "expected_calls": [add]},  # right tool, one argument wrong
        {"id": "t3", "expected_calls": [add]},  # a malformed call
        {"id": "t4", "expected_calls": []},  # no tool is right: answered without one
        {"id": "t5", "expected_calls": []},  # ... and with one
        {"id": "t6"},  # no expected calls at all
    ]
    trajs = [
        _traj("t1", [_call("add", {"a": 1, "b": 2})], {"math": 1.0}, 2, 10),
        _traj("t2", [_call("add", {"a": 1, "b": 5})], {"math": 0.0}, 2, 20),
        _traj("t3", [_call("add", None)], {"math": 0.0}, 2, 30),
        _traj("t4", [], {"math": 1.0}, 1, 40),
        _traj("t5", [_call("mul", {"a": 1})], {"math": 1.0}, 2, 50),
        _traj("t6", [], {}, 1, 60),
    ]
    (run / "source" / "records.jsonl").write_text("".join(json.dumps(t) + "\n" for t in tasks))
    (run / "score" / "records.jsonl").write_text("".join(json.dumps(t) + "\n" for t in trajs))
    f = figures(run)
    assert f["tasks"] == 6
    assert (f["success"]["k"], f["success"]["n"]) == (3, 6)  # t1, t4, t5
    assert (f["called"]["k"], f["called"]["n"]) == (4, 6)
    assert (f["well_formed_calls"]["k"], f["well_formed_calls"]["n"]) == (3, 4)
    assert (f["tool_selection"]["k"], f["tool_selection"]["n"]) == (2, 3)  # t3 is malformed
    # tool_call F1: t1 1.0, t2 half the argument keys match: 2 * 0.5 / 2 = 0.5, t3 0.0
    assert f["arguments"]["value"] == pytest.approx(0.5) and f["arguments"]["n"] == 3
    assert (f["no_call"]["k"], f["no_call"]["n"]) == (1, 2)
    assert f["steps"]["value"] == pytest.approx(10 / 6, abs=1e-4)  # kept to 4 decimals
    assert f["completion_tokens"]["value"] == pytest.approx(35.0)
    assert f["success"]["ci95"] == [round(x, 4) for x in wilson(3, 6)]
    lo, hi = f["completion_tokens"]["ci95"]
    assert lo < 35.0 < hi


def test_eval_config_keeps_the_agent_and_replaces_the_rest(tmp_path: Path) -> None:
    from agentmill.config import RunConfig

    base = RunConfig.model_validate(
        {
            "backends": {"teacher": {"type": "scripted"}},
            "sources": [{"path": "train.jsonl", "field_map": {"prompt": "q"}, "limit": 5}],
            "rollout": {"n": 8, "tools": ["calculator"], "params": {"temperature": 0.9}},
            "score": {"rewards": ["math"]},
            "filter": {"min_reward": 1.0},
            "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
        }
    )
    cfg = eval_config("models/r1", tmp_path / "held.jsonl", base)
    assert cfg.backends["eval"].type == "local" and cfg.backends["eval"].model == "models/r1"
    assert (cfg.rollout.backend, cfg.rollout.n, cfg.rollout.params.temperature) == ("eval", 1, 0.0)
    assert [t.type for t in cfg.rollout.tools] == ["calculator"]
    src = cfg.sources[0]
    assert (
        src.path == (tmp_path / "held.jsonl").resolve()
        and src.field_map.prompt == "q"
        and src.limit is None
    )
    assert cfg.filter is None and cfg.export == []
    served = eval_config("Qwen/Qwen3-8B", tmp_path / "h.jsonl", base_url="http://h:8000/v1")
    assert served.backends["eval"].type == "openai"
    assert served.backends["eval"].api_key_env is None


def test_eval_config_keeps_the_backend_settings_and_replaces_the_model(tmp_path: Path) -> None:
    from agentmill.config import RunConfig

    local = RunConfig.model_validate(
        {
            "backends": {"t": {"type": "local", "max_batch_size": 64, "dtype": "bfloat16"}},
            "sources": [{"path": "train.jsonl"}],
            "rollout": {"backend": "t"},
        }
    )
    b = eval_config("models/r1", tmp_path / "h.jsonl", local).backends["eval"]
    assert (b.model, b.max_batch_size, b.dtype) == ("models/r1", 64, "bfloat16")
    served = RunConfig.model_validate(
        {
            "backends": {
                "t": {
                    "type": "openai",
                    "base_url": "http://prod:8000/v1",
                    "model": "prod-model",
                    "api_key_env": "PROD_KEY",
                    "headers": {"X-Auth": "prod"},
                    "timeout_s": 600,
                    "tool_protocol": "text",
                }
            },
            "sources": [{"path": "train.jsonl"}],
            "rollout": {"backend": "t"},
        }
    )
    cfg = eval_config("m2", tmp_path / "h.jsonl", served, base_url="http://h:8000/v1")
    b = cfg.backends["eval"]
    assert (b.base_url, b.model, b.timeout_s, b.tool_protocol) == (
        "http://h:8000/v1",
        "m2",
        600,
        "text",
    )
    # the production endpoint's credentials never travel to another server
    assert b.api_key_env is None and b.headers == {}
    # a local eval of a config that samples from a server keeps nothing of the server's
    b = eval_config("models/r1", tmp_path / "h.jsonl", served).backends["eval"]
    assert b.type == "local" and b.max_batch_size == 16


@pytest.mark.model
def test_two_models_side_by_side_with_the_embedded_model(cli, tmp_path, smollm_path) -> None:
    student = tmp_path / "student"
    student.symlink_to(smollm_path, target_is_directory=True)  # a second model folder
    tasks = tmp_path / "held.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"question": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n"
            for a, b in [(2, 3), (10, 7)]
        )
    )
    config = tmp_path / "eval.yaml"
    config.write_text(
        "backends: {teacher: {type: local}}\nsources: [{path: unused.jsonl}]\n"
        "rollout: {tools: [calculator], agent: {max_steps: 2}, params: {max_tokens: 48}}\n"
        "score: {rewards: [math]}\n"
    )
    out = tmp_path / "eval"
    args = ["eval", "smollm2-135m", student, "--tasks", tasks, "--config", config, "-o", out]
    rc, stdout, err = cli(*args)
    assert rc == 0, stdout + err
    assert "smollm2-135m" in stdout and "student" in stdout and "success" in stdout
    report = orjson.loads((out / "eval.json").read_bytes())
    assert set(report["models"]) == {"smollm2-135m", "student"}
    for label, r in report["models"].items():
        assert r["tasks"] == 2 and r["success"]["n"] == 2, label
        trajs = (out / label / "rollout" / "records.jsonl").read_text().splitlines()
        assert len(trajs) == 2
        assert all(orjson.loads(t)["params"]["temperature"] == 0.0 for t in trajs)
    # the same weights at temperature 0: the same answers
    a, b = (report["models"][k] for k in ("smollm2-135m", "student"))
    assert a["success"] == b["success"] and a["completion_tokens"] == b["completion_tokens"]
    rc, _, err = cli("eval", "smollm2-135m", "--tasks", tmp_path / "missing.jsonl", "-o", out)
    assert rc == 2 and "tasks file not found" in err
