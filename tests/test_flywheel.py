"""`agentmill flywheel`: one round with the real embedded model (sample with constrained first
calls, score, filter, train one LoRA step, evaluate), killed with SIGKILL while it trains and
resumed: the ledger holds each round once and no trajectory is sampled twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import yaml

from agentmill.store import iter_jsonl

pytest_plugins = ["trainer_fixtures"]  # tiny_llama


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for _, line in iter_jsonl(path)]


def _write_configs(tmp_path: Path) -> Path:
    tasks = [(3, 4), (12, 5), (7, 8)]
    (tmp_path / "train.jsonl").write_text(
        "".join(f'{{"question": "What is {a} + {b}?", "answer": "{a + b}"}}\n' for a, b in tasks)
    )
    (tmp_path / "held.jsonl").write_text('{"question": "What is 20 + 22?", "answer": "42"}\n')
    run = {
        "seed": 0,
        "backends": {"teacher": {"type": "local", "model": "smollm2-135m"}},
        "sources": [{"path": "train.jsonl", "field_map": {"prompt": "question"}}],
        "rollout": {
            "n": 2,
            "tools": ["calculator"],
            "agent": {"max_steps": 2, "first_tool_choice": "required"},
            # 48 tokens: room to close the forced call (at 32 it was often cut off)
            "params": {"temperature": 0.8, "max_tokens": 48},
        },
        "score": {"rewards": ["math"]},
        # keeps every trajectory, whatever the 135M model samples: this test is about the
        # resume (with `valid_tool_calls_only`, some runs dropped all 6: batches form by
        # timing and the rows of a batch share its random stream, so samples vary by run)
        "filter": {"max_steps": 2},
        "cache": {"path": str(tmp_path / "cache.sqlite")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    fw = {
        "name": "fw",
        "run": "run.yaml",
        "student": "smollm2-135m",
        "eval_tasks": "held.jsonl",
        "train": {"method": "sft", "max_steps": 1, "batch_size": 2, "max_length": 512},
    }
    (tmp_path / "flywheel.yaml").write_text(yaml.safe_dump(fw))
    return tmp_path / "flywheel.yaml"


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_one_round_resumes_after_sigkill(cli, tmp_path: Path, smollm_path: Path) -> None:
    config, out = _write_configs(tmp_path), tmp_path / "fw"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "agentmill",
        "flywheel",
        str(config),
        "--rounds",
        "1",
        "-o",
        str(out),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    data = out / "round-1" / "run" / "export" / "train.jsonl"
    deadline = time.monotonic() + 600
    while not data.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)  # while it trains
    proc.wait()
    assert not (out / "round-1" / "model" / "train.json").exists()
    rollout = out / "round-1" / "run" / "rollout" / "records.jsonl"
    sampled, calls = len(_lines(rollout)), len(_lines(out / "round-1" / "run" / "calls.jsonl"))
    assert sampled == 6  # the run had finished: 3 tasks x 2 samples
    assert [r["round"] for r in _lines(out / "ledger.jsonl")] == [0]

    rc, stdout, err = cli("flywheel", config, "--rounds", "1", "-o", out)
    assert rc == 0, stdout + err
    ledger = _lines(out / "ledger.jsonl")
    assert [r["round"] for r in ledger] == [0, 1]
    assert len(_lines(rollout)) == sampled  # nothing sampled twice
    assert len(_lines(out / "round-1" / "run" / "calls.jsonl")) == calls  # nor sampled again
    one = ledger[1]
    trained = orjson.loads((out / "round-1" / "model" / "train.json").read_bytes())
    assert one["data"]["sha256"] == trained["data_sha256"] and one["train"]["steps"] == 1
    funnel = one["funnel"]
    exported = sum(funnel["exported"].values())
    assert funnel["kept"] == 6 == exported + sum(funnel["export_skipped"].values())
    assert one["data"]["records"] == exported > 0
    assert one["eval"]["tasks"] == 1 and ledger[0]["eval"]["tasks"] == 1
    # a finished flywheel asked again does nothing new
    rc, _, _ = cli("flywheel", config, "--rounds", "1", "-o", out)
    assert rc == 0 and len(_lines(out / "ledger.jsonl")) == 2
    rc, _, _ = cli("report", out, "-o", tmp_path / "rounds.html")
    page = (tmp_path / "rounds.html").read_text()
    assert rc == 0 and 'data-chart="rounds-success"' in page and "round 1" in page


def test_the_example_config_loads() -> None:
    from agentmill.flywheel import load_flywheel
    from agentmill.train.trainer import TrainOptions

    example = Path(__file__).resolve().parents[1] / "examples" / "flywheel" / "flywheel.yaml"
    fw = load_flywheel(example)
    assert fw.run.exists() and fw.eval_tasks.exists()
    assert TrainOptions(**fw.train).method == "sft"
    train = {
        line.split('"question": ')[1]
        for line in (fw.run.parent / "data" / "arithmetic.jsonl").read_text().splitlines()
    }
    held = {line.split('"question": ')[1] for line in fw.eval_tasks.read_text().splitlines()}
    assert not train & held  # held out for real


def test_the_measured_example_holds_out_its_eval_tasks() -> None:
    """examples/flywheel/calc.yaml: the shipped held-out set is what docs/benchmarks.md says
    (>= 200 tasks: one- and two-call word problems, no-tool questions, a distractor tool), no
    held-out question is a training question, and the sampling forces what each task expects
    while the eval leaves the model free."""
    from agentmill.configfile import load_config
    from agentmill.flywheel import load_flywheel

    here = Path(__file__).resolve().parents[1] / "examples" / "flywheel"
    fw = load_flywheel(here / "calc.yaml")
    held = _lines(fw.eval_tasks)
    train = _lines(here / "calc_train.jsonl")
    assert len(held) >= 200 and not {t["question"] for t in held} & {t["question"] for t in train}
    kinds = {k: sum(t["kind"] == k for t in held) for k in ("one-call", "two-call", "no-tool")}
    assert min(kinds.values()) >= 40, kinds
    assert all((t["expected_calls"] == []) == (t["kind"] == "no-tool") for t in held + train)
    sample, evaluate = load_config(fw.run), load_config(fw.eval_run)
    assert sample.rollout.agent.first_tool_choice == "expected"
    assert evaluate.rollout.agent.first_tool_choice is None and not evaluate.rollout.few_shot
    assert sample.rollout.system_prompt == evaluate.rollout.system_prompt
    tools = {t.name or t.path.split(":")[-1] for t in evaluate.rollout.tools}
    assert tools == {"calculator", "get_weather"}  # get_weather: the distractor
    studio = load_flywheel(here / "studio_loop.yaml")
    assert studio.feedback and studio.feedback.exists() and studio.eval_run.exists()


def test_eval_run_is_resolved_beside_the_config(tmp_path: Path) -> None:
    from agentmill.flywheel import load_flywheel

    (tmp_path / "sub").mkdir()
    for name in ("run.yaml", "auto.yaml", "held.jsonl"):
        (tmp_path / "sub" / name).write_text("")
    cfg = tmp_path / "sub" / "fw.yaml"
    cfg.write_text(
        "run: run.yaml\nstudent: smollm2-135m\neval_tasks: held.jsonl\neval_run: auto.yaml\n"
    )
    fw = load_flywheel(cfg)
    assert fw.eval_run == (tmp_path / "sub" / "auto.yaml").resolve() and fw.eval_run.exists()
    cfg.write_text("run: run.yaml\nstudent: smollm2-135m\neval_tasks: held.jsonl\n")
    assert load_flywheel(cfg).eval_run is None  # the evals use the run's agent


def test_the_student_sampler_keeps_the_teachers_backend_settings(tmp_path: Path) -> None:
    """Round k > 1 samples with round k-1's model on the teacher's settings (batch size,
    dtype, device): a GPU flywheel must not fall back to the CPU defaults."""
    from agentmill.flywheel import _round_config, load_flywheel

    fw_path = _write_configs(tmp_path)
    run = yaml.safe_load((tmp_path / "run.yaml").read_text())
    run["backends"]["teacher"] |= {"max_batch_size": 48, "dtype": "bfloat16", "device": "cuda"}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    fw = load_flywheel(fw_path)
    cfg = _round_config(fw, 2, str(tmp_path / "round-1" / "model"))
    student = cfg.backends[cfg.rollout.backend]
    assert student.model == str(tmp_path / "round-1" / "model")
    assert (student.max_batch_size, student.dtype, student.device) == (48, "bfloat16", "cuda")
    assert cfg.backends["teacher"].model == "smollm2-135m"  # round 1's sampler, untouched


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_feedback_flywheel_from_chat_logs(cli, tmp_path: Path, tiny_llama: Path) -> None:
    """The feedback cycle in one config: production chat logs -> judge -> kept tasks -> the
    agent re-run on them -> train -> eval. The judge and the teacher are the scripted FAKE
    backend (control flow); the student is the tiny random Llama, trained and evaluated for real."""
    chats = Path(__file__).resolve().parents[1] / "examples" / "data" / "feedback_chats.jsonl"
    good = '{"result": "GOOD", "reason": "fine"}'
    feedback = {
        "backends": {"judge": {"type": "scripted", "replies": [good]}},
        "sources": [{"type": "traces", "format": "chat-logs", "path": str(chats)}],
        "judge": {"backend": "judge", "keep": ["GOOD"]},
        "tasks_out": {"path": "{run}/tasks.jsonl"},
        "cache": {"enabled": False},
    }
    run = {
        "backends": {"teacher": {"type": "scripted", "replies": ["We can help with that."]}},
        "sources": [{"path": "unused.jsonl"}],
        "rollout": {"n": 1, "params": {"max_tokens": 8}},
        "cache": {"enabled": False},
    }
    (tmp_path / "feedback.yaml").write_text(yaml.safe_dump(feedback))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    run["rollout"]["params"]["max_tokens"] = 3  # the evals' own agent settings
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(run))
    (tmp_path / "held.jsonl").write_text('{"question": "Do you ship to Peru?", "answer": "yes"}\n')
    fw = {
        "name": "fb",
        "feedback": "feedback.yaml",
        "run": "run.yaml",
        "student": str(tiny_llama),
        "eval_tasks": "held.jsonl",
        "eval_run": "eval.yaml",
        "train": {"method": "sft", "max_steps": 1, "batch_size": 2, "max_length": 256},
    }
    (tmp_path / "fw.yaml").write_text(yaml.safe_dump(fw))
    out = tmp_path / "fb"
    rc, stdout, err = cli("flywheel", tmp_path / "fw.yaml", "--rounds", "1", "-o", out)
    assert rc == 0, stdout + err
    kept = _lines(out / "feedback" / "tasks.jsonl")
    ledger = _lines(out / "ledger.jsonl")
    assert ledger[0]["feedback"]["judged"]["GOOD"] > 0 and len(kept) > 0
    # every kept task was re-run by the agent, and the student trained on the result
    rerun = _lines(out / "round-1" / "run" / "rollout" / "records.jsonl")
    assert {t["task_id"] for t in rerun} == {t["id"] for t in kept}
    assert ledger[1]["data"]["records"] == len(rerun) and ledger[1]["eval"]["tasks"] == 1
    assert all(t["params"]["max_tokens"] == 8 for t in rerun)  # the run's agent samples
    (evaluated,) = _lines(out / "round-1" / "eval" / "model" / "rollout" / "records.jsonl")
    assert evaluated["params"]["max_tokens"] == 3  # the eval_run's agent evaluates


@pytest.mark.model
@pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")
def test_accumulate_carries_earlier_rounds_kept_records(
    cli, tmp_path: Path, tiny_llama: Path
) -> None:
    """`accumulate: true`: round 2 trains on what round 1 kept as well as its own (each round
    with its own seed, so its own trajectory ids), under `balance.max_total`. The teacher is
    the scripted FAKE backend (control flow); the tiny random Llama trains for real."""
    (tmp_path / "train.jsonl").write_text(
        '{"question": "What is 2 + 2?", "answer": "4"}\n{"question": "What is 1 + 3?", "answer": "4"}\n'
    )
    (tmp_path / "held.jsonl").write_text('{"question": "What is 20 + 22?", "answer": "42"}\n')
    run = {
        "backends": {"teacher": {"type": "scripted", "replies": ["4"]}},
        "sources": [{"path": "train.jsonl", "field_map": {"prompt": "question"}}],
        "rollout": {"n": 2, "params": {"max_tokens": 4}},
        "score": {"rewards": ["math"]},
        "filter": {"min_reward": 1.0, "reward": "math"},
        "balance": {
            "key": "reward",
            "mode": "proportions",
            "proportions": {"1": 1.0},
            "allow_upsample": True,
            "max_total": 6,
        },
        "cache": {"enabled": True, "path": str(tmp_path / "cache.sqlite")},
    }
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    fw = {
        "name": "acc",
        "run": "run.yaml",
        "student": str(tiny_llama),
        "eval_tasks": "held.jsonl",
        "accumulate": True,
        "train": {"method": "sft", "max_steps": 1, "batch_size": 2, "max_length": 256},
    }
    (tmp_path / "fw.yaml").write_text(yaml.safe_dump(fw))
    out = tmp_path / "acc"
    rc, stdout, err = cli("flywheel", tmp_path / "fw.yaml", "--rounds", "2", "-o", out)
    assert rc == 0, stdout + err
    kept = [_lines(out / f"round-{k}" / "run" / "filter" / "records.jsonl") for k in (1, 2)]
    ids = [{t["id"] for t in k} for k in kept]
    assert len(kept[0]) == 4 and ids[0] < ids[1] and len(ids[1]) == 8  # 4 own + 4 carried
    ledger = _lines(out / "ledger.jsonl")
    assert ledger[1]["funnel"]["carried"] == 0 and ledger[2]["funnel"]["carried"] == 4
    assert ledger[1]["data"]["records"] == 4 and ledger[2]["data"]["records"] == 6  # max_total
    calls = _lines(out / "round-2" / "run" / "calls.jsonl")
    assert len(calls) == 4 and not any(c["cache_hit"] for c in calls)  # sampled afresh


def test_the_measured_task_files_are_the_generator_output(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    script = root / "scripts" / "make_flywheel_tasks.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    for name in ("calc_held_out.jsonl", "calc_train.jsonl"):
        assert (tmp_path / name).read_bytes() == (
            root / "examples" / "flywheel" / name
        ).read_bytes()
