"""Feedback runs end to end: real trace files in, no rollout, a judge, dedup, tasks out.

The traces are read by the real ingesters. The judge is the real `openai` backend over HTTP
to the stub server (a FAKE server with canned verdicts per judge prompt: the pipeline's
control flow is under test here; tests/test_judge.py and tests/test_examples.py run the
judge on the real embedded model).
"""

import importlib.util
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import yaml

from agentmill.astuner import qa_hash
from agentmill.ingest import read_traces
from agentmill.ingest.redact import Redactor
from agentmill.records import Message, Trajectory
from agentmill.scoring.judge import user_prompt
from agentmill.scoring.judge_config import JudgeConfig
from agentmill.store import iter_jsonl
from agentmill.testing.stub_server import kill_when_a_call_hangs, run_stub_in_thread

GOOD = '{"reason": "complete", "result": "GOOD"}'
BAD = '{"reason": "excuse instead of an answer", "result": "BAD"}'
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
SYSTEM = {"role": "system", "content": "You are the support agent of a shoe shop."}


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


def _conv(i: int, query: str, answer: str | None) -> dict:
    msgs = [SYSTEM, {"role": "user", "content": query}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    usage = {"prompt_tokens": 50 + i, "completion_tokens": 10 + i}
    return {"id": f"conv-{i}", "model": "shop-agent", "usage": usage, "messages": msgs}


CONVS = [
    _conv(1, "Do you ship to Canada?", "Yes, delivery to Canada takes 5 to 8 business days."),
    _conv(2, "How do I return shoes that do not fit?", "I tried but the tool timed out."),
    _conv(3, "What sizes does the Trail Runner come in?", "EU 36 to 47, half sizes 39 to 45."),
    _conv(4, "Do you ship to Canada??", "Yes, delivery to Canada takes 5 to 8 business days!"),
    _conv(5, "Is the Court Classic waterproof?", None),  # no answer: no task
    _conv(6, "Can I pay with PayPal? Mail me at jo@example.com", "Yes, PayPal is accepted."),
    _conv(7, "Which colours does the Court Classic have?", "White, black and navy."),
]
VERDICTS = {2: BAD, 7: None}  # 7: no canned reply, the stub echoes: an unparseable ERROR


def _judge_prompt(conv: dict) -> str:
    """What the judge is sent for `conv` (redacted: trace sources redact by default)."""
    msgs = [Message.model_validate(m) for m in conv["messages"]]
    t = Trajectory(id="x", task_id="x", messages=msgs, final_answer=msgs[-1].text)
    return user_prompt(Redactor().trajectory(t), JudgeConfig())


def _serve_verdicts(server, convs: list[dict]) -> None:
    for conv in convs:
        i = int(conv["id"].split("-")[1])
        reply = VERDICTS.get(i, GOOD)
        if reply is not None and conv["messages"][-1]["role"] == "assistant":
            server.add_reply(_judge_prompt(conv), {"content": reply})


def _write_log(path: Path, convs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in convs))
    return path


def _config(log: Path, url: str, tasks: Path, **extra) -> dict:
    return {
        "name": "fb",
        "backends": {
            "judge": {"type": "openai", "base_url": url, "model": "stub", "max_retries": 0}
        },
        "sources": [{"type": "traces", "format": "chat-logs", "path": str(log)}],
        "judge": {"backend": "judge", "max_concurrency": 1},
        "dedup": {"field": "query", "threshold": 0.8},
        "tasks_out": {"path": str(tasks), "format": "astuner"},
        "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
        "cache": {"enabled": False},
        **extra,
    }


def _chats(server) -> int:
    return len(server.log)


def test_feedback_run_on_chat_logs_then_resume_and_top_up(tmp_path, cli, write_config) -> None:
    log = _write_log(tmp_path / "chats.jsonl", CONVS[:5])
    tasks, out = tmp_path / "out" / "tasks.jsonl", tmp_path / "run"
    with run_stub_in_thread() as (server, url):
        _serve_verdicts(server, CONVS)
        cfg = write_config(_config(log, url, tasks))
        rc, stdout, stderr = cli("run", cfg, "--out", out)
        assert rc == 0, stdout + stderr
        # no rollout: 4 traces with an answer became trajectories, the 5th a bad record
        trajs = _lines(out / "rollout" / "records.jsonl")
        assert [t["provenance"]["source_id"] for t in trajs] == [f"conv-{i}" for i in (1, 2, 3, 4)]
        assert {t["task_id"] for t in trajs} == {
            t["id"] for t in _lines(out / "source" / "records.jsonl")
        }
        assert "bad records 1" in stdout and "model calls 0" in stdout
        failures = _lines(out / "failures.jsonl")
        assert [f["reason"] for f in failures] == ["trace_without_query_or_answer"]
        assert _chats(server) == 4  # one judge call per trajectory
        funnel = orjson.loads((out / "manifest.json").read_bytes())["stages"]["funnel"]
        assert funnel["judged"] == {"GOOD": 3, "BAD": 1} and funnel["dropped"] == {"judge_bad": 1}
        # dedup: "Do you ship to Canada??" is the same task as conv-1
        assert funnel["curation"]["dedup"]["dropped"] == {"exact_duplicate": 1}
        sft = _lines(out / "export" / "sft.jsonl")
        assert len(sft) == 2
        lines = _lines(tasks)
        assert [x["main_query"] for x in lines] == [
            "Do you ship to Canada?",
            "What sizes does the Trail Runner come in?",
        ]
        assert all(
            x["split"] in ("train", "validation") and x["env_type"] == "tracing" for x in lines
        )
        assert all(x["init_messages"] == [SYSTEM] for x in lines)
        assert len(_lines(tmp_path / "out" / "tasks.agentmill.jsonl")) == 2
        assert funnel["tasks_out"]["added"] == 2

        # resume: nothing is judged again, nothing is appended twice
        rc, stdout, _ = cli("run", cfg, "--out", out)
        assert rc == 0 and _chats(server) == 4 and len(_lines(tasks)) == 2

        # top-up: the log grew by two conversations; only they are read in and judged
        _write_log(log, CONVS)
        rc, stdout, _ = cli("run", cfg, "--out", out)
        assert rc == 0, stdout
        assert len(_lines(out / "rollout" / "records.jsonl")) == 6
        assert _chats(server) == 6
        funnel = orjson.loads((out / "manifest.json").read_bytes())["stages"]["funnel"]
        assert funnel["judged"] == {"GOOD": 4, "BAD": 1, "ERROR": 1}
        assert [x["main_query"] for x in _lines(tasks)][2:] == [
            "Can I pay with PayPal? Mail me at [REDACTED_EMAIL]"
        ]
        assert funnel["tasks_out"] | {"path": None} == {
            "path": None,
            "tasks": 3,
            "added": 1,
            "already": 2,
            "agentmill_tasks": str(tmp_path / "out" / "tasks.agentmill.jsonl"),
        }
        # the ERROR (an echo, not a verdict) is judged again on the next run, nothing else
        rc, _, _ = cli("run", cfg, "--out", out)
        assert rc == 0 and _chats(server) == 7
    assert "jo@example.com" not in (out / "rollout" / "records.jsonl").read_text()


def test_killed_feedback_run_resumes_without_re_judging(tmp_path, write_config) -> None:
    convs = [_conv(i, f"Question number {i} FAULT=hangx1" if i == 4 else f"Q {i}", f"A {i}")
             for i in range(1, 8)]  # fmt: skip
    log = _write_log(tmp_path / "chats.jsonl", convs)
    out = tmp_path / "run"
    with run_stub_in_thread(hang_s=60) as (server, url):
        for c in convs:
            server.add_reply(_judge_prompt(c), {"content": GOOD})
        cfg = write_config(_config(log, url, tmp_path / "tasks.jsonl"))
        cmd = [sys.executable, "-m", "agentmill", "run", str(cfg), "--out", str(out)]
        kill_when_a_call_hangs(cmd, server)
        assert len(_lines(out / "judge" / "verdicts.jsonl")) == 3
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    paid = Counter(e["key"] for e in server.log if e["outcome"] == "ok")
    assert len(paid) == 7 and set(paid.values()) == {1}  # each verdict paid for once
    assert len(server.log) == 8  # plus the call cut off by the kill
    assert len(_lines(out / "judge" / "records.jsonl")) == 7


def test_mixed_sources_roll_out_only_the_file_tasks(
    tmp_path, cli, write_config, tasks_file
) -> None:
    log = _write_log(tmp_path / "chats.jsonl", CONVS[:3])
    cfg = {
        "name": "mixed",
        "backends": {"teacher": {"type": "scripted", "replies": ["4"]}},
        "sources": [
            {"path": str(tasks_file(2))},
            {"type": "traces", "format": "chat-logs", "path": str(log)},
        ],
        "rollout": {"n": 2},
    }
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out)
    assert rc == 0, stdout
    trajs = _lines(out / "rollout" / "records.jsonl")
    sources = Counter(t["provenance"]["source"] for t in trajs)
    assert sources["chat-logs"] == 3 and len(trajs) == 3 + 2 * 2
    assert "trajectories 7/7" in stdout and "model calls 4" in stdout


def test_trace_only_run_needs_no_backend(tmp_path, cli, write_config) -> None:
    log = _write_log(tmp_path / "chats.jsonl", CONVS[:2])
    cfg = {"name": "t", "sources": [{"type": "traces", "format": "chat-logs", "path": str(log)}]}
    out = tmp_path / "run"
    rc, stdout, _ = cli("run", write_config(cfg), "--out", out, "--limit", "1")
    assert rc == 0, stdout
    assert len(_lines(out / "rollout" / "records.jsonl")) == 1 and "trajectories 1/1" in stdout
    rc, _, stderr = cli(
        "run", write_config({**cfg, "sources": [{"path": str(log)}]}), "--out", tmp_path / "r2"
    )
    assert rc == 2 and "rollout.backend 'teacher' is not defined in backends" in stderr


# ---------------------------------------------------------------- Studio and the astuner config
def _studio_runs() -> list:
    from studio_db import RunScript, Step, Turn

    def run(i: int, user: str, answer: str) -> RunScript:
        start = datetime(2026, 3, 2, 9 + i, 0, 0, tzinfo=UTC)
        return RunScript(f"run-{i}", [Turn(user=user, steps=[Step(answer)])], start=start)

    return [
        run(1, "Do you ship to Canada?", "Yes, delivery to Canada takes 5 to 8 business days."),
        run(2, "How do I return shoes?", "I tried but the returns tool timed out."),
        run(3, "Do you ship to Canada??", "Yes, delivery to Canada takes 5 to 8 business days!"),
        run(4, "Which sizes does the Trail Runner have?", "EU 36 to 47."),
    ]


def _serve_studio_verdicts(server, db: Path) -> None:
    """Canned verdicts keyed by the judge prompt of each (redacted) Studio trajectory."""
    for t in read_traces("agentscope-studio", db):
        reply = BAD if "timed out" in (t.final_answer or "") else GOOD
        server.add_reply(user_prompt(Redactor().trajectory(t), JudgeConfig()), {"content": reply})


def test_astuner_config_runs_on_a_studio_file(tmp_path, cli, monkeypatch, capsys) -> None:
    from studio_db import build_db, write_run

    runs = _studio_runs()
    db = build_db(tmp_path / "database.sqlite", runs[:3])
    astuner = {
        "astuner": {
            "project_name": "shop",
            "task_reader": {
                "type": "tracing",
                "feedback_tracing": {
                    "base_url": "./database.sqlite",
                    "train_output_path": "./tasks.jsonl",
                    "alien_llm_model": "judge-model",
                    "alien_llm_response_length": 128,
                    "filters": [
                        {"type": "llm_evaluate", "enabled": True, "params": {"max_thread": 2}},
                        {"type": "deduplication", "params": {"similarity_threshold": 0.8}},
                    ],
                },
            },
        }
    }
    cfg = tmp_path / "astuner.yaml"
    cfg.write_text(yaml.safe_dump(astuner))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["run", cfg, "--out", tmp_path / "run", "-c", "cache.enabled=false"]
    with run_stub_in_thread() as (server, url):
        monkeypatch.setenv("OPENAI_BASE_URL", url)
        _serve_studio_verdicts(server, db)
        rc, stdout, stderr = cli(*args)
        assert rc == 0, stdout + stderr
        assert "ignored astuner keys" in stderr and "project_name" in stderr
        assert len(server.log) == 3  # one judge call per Studio turn
        assert all(server.bodies[k]["model"] == "judge-model" for k in server.bodies)
        assert all(server.bodies[k]["max_tokens"] == 128 for k in server.bodies)
        lines = _lines(tmp_path / "tasks.jsonl")  # relative to the working directory
        assert [x["main_query"] for x in lines] == ["Do you ship to Canada?"]
        assert lines[0]["metadata"] == {
            "answer": "Yes, delivery to Canada takes 5 to 8 business days.",
            "qa_hash": qa_hash(
                "Do you ship to Canada?", "Yes, delivery to Canada takes 5 to 8 business days."
            ),
        }
        assert lines[0]["split"] in ("train", "validation") and lines[0]["task_id"]
        tasks = _lines(tmp_path / "tasks.agentmill.jsonl")
        assert [t["id"] for t in tasks] == [lines[0]["task_id"]]
        # the Studio file grows (Studio appends as the agent serves): only the new run is added
        with sqlite3.connect(db) as conn:
            write_run(conn, runs[3], "new", "genai")
        _serve_studio_verdicts(server, db)
        rc, stdout, _ = cli(*args)
        assert rc == 0, stdout
        assert len(server.log) == 4
    queries = [x["main_query"] for x in _lines(tmp_path / "tasks.jsonl")]
    assert queries == ["Do you ship to Canada?", "Which sizes does the Trail Runner have?"]


def test_example_studio_file_is_current(tmp_path) -> None:
    """examples/data/studio_feedback.sqlite is what its generator makes today."""
    spec = importlib.util.spec_from_file_location(
        "make_studio", EXAMPLES / "make_studio_feedback.py"
    )
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    fresh = gen.main(tmp_path / "fresh.sqlite")

    def read(path: Path) -> list[dict]:
        return [
            t.model_dump(exclude={"created_at", "provenance"})
            for t in read_traces("agentscope-studio", path)
        ]

    committed = read(EXAMPLES / "studio_feedback.sqlite")
    assert committed == read(fresh) and len(committed) == 4


def test_trace_source_options_and_resume_with_dates(tmp_path, cli, write_config) -> None:
    from agentmill.config import RunConfig, fingerprint_view
    from agentmill.runs import config_diff

    src = {"type": "traces", "format": "agentscope-studio", "path": str(tmp_path / "db")}
    cfg = RunConfig.model_validate({"sources": [src | {"since": "2026-01-01", "projects": ["a"]}]})
    view = fingerprint_view(cfg)
    assert config_diff(orjson.loads(orjson.dumps(view)), view) == []  # as the manifest holds it
    log = _write_log(tmp_path / "chats.jsonl", CONVS[:1])
    bad = {
        "sources": [
            {"type": "traces", "format": "chat-logs", "path": str(log), "since": "2026-01-01"}
        ]
    }
    rc, _, stderr = cli("run", write_config(bad), "--out", tmp_path / "r")
    assert rc == 2 and "since does not apply to format chat-logs" in stderr
