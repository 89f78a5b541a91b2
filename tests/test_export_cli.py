"""Every export format from the run config's `export:` list and from `agentmill export`
(scripted FAKE backend: the run is control flow; the files are read back with real readers)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
import pytest
import yaml

from agentmill.export import FORMATS
from agentmill.store import iter_jsonl

datasets = pytest.importorskip("datasets")
CALC = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2 * 2"}}]}


def lines(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


def run_config(tasks: Path, export: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "exp",
        "sources": [{"path": str(tasks)}],
        "backends": {
            "teacher": {"type": "scripted", "replies": [CALC, "4", CALC, "5"], "max_concurrency": 1}
        },
        "rollout": {"n": 2, "tools": ["calculator"]},
        "score": {"rewards": ["math"]},
        "filter": {"max_steps": 5},
        "export": export,
    }


@pytest.fixture
def run(tmp_path: Path, cli, write_config) -> Path:
    """A finished run of 3 tasks x 2 samples whose config exports every format with splits."""
    tasks = tmp_path / "t.jsonl"
    tasks.write_text(
        "".join(
            json.dumps({"question": f"What is 2 * 2? ({i})", "answer": "4"}) + "\n"
            for i in range(3)
        )
    )
    export = [
        {"format": f, "split": True, "val_fraction": 0.5, "tool_class": "pkg.Calc"} for f in FORMATS
    ]
    export.append({"format": "trl-sft", "path": "pc.jsonl", "prompt_completion": True})
    out = tmp_path / "run"
    rc, stdout, stderr = cli("run", write_config(run_config(tasks, export)), "--out", out)
    assert rc == 0, stdout + stderr
    return out


def test_run_config_exports_every_format_with_splits(run: Path) -> None:
    funnel = orjson.loads((run / "manifest.json").read_bytes())["stages"]["funnel"]
    exported = funnel["exported"]
    names = {Path(p).name for p in exported}
    for stem in ("sft", "dpo", "react", "trajectories", "grpo"):
        assert {f"{stem}.train.jsonl", f"{stem}.validation.jsonl"} & names, stem
    assert {"verl_rl.train.parquet", "verl_sft.train.parquet"} & names
    assert (run / "export" / "verl_rl.tools.yaml").exists()
    assert exported["export/pc.jsonl"] == 6 and "pc.train.jsonl" not in names
    for path, count in exported.items():
        file = run / path
        n = len(lines(file)) if file.suffix != ".parquet" else pq.read_table(file).num_rows
        assert n == count, path
    rows = lines(run / "export" / "pc.jsonl")
    assert all(r["completion"][0]["role"] == "assistant" and r["id"] for r in rows)
    # one row per task for the task formats; every task on one side
    grpo = [r for p in exported if "grpo" in p for r in lines(run / p)]
    assert sorted(r["task_id"] for r in grpo) == sorted({r["task_id"] for r in rows})
    stats = orjson.loads((run / "export" / "stats.json").read_bytes())
    assert stats["exported"] == exported and "notes" in stats


def test_hf_card_from_a_run_has_the_resolved_config_and_curation(run: Path, tmp_path) -> None:
    card = (run / "export" / "hf" / "README.md").read_text()
    config = card.split("## Resolved run config\n\n```yaml\n")[1].split("```")[0]
    assert yaml.safe_load(config)["name"] == "exp"
    assert config == (run / "config.yaml").read_text()
    assert "| filter |" in card and "| score |" in card and "pretty_name: exp" in card
    ds = datasets.load_dataset(str(run / "export" / "hf"), cache_dir=str(tmp_path / "c"))
    assert sum(len(s) for s in ds.values()) == 6
    assert all(r["messages"][-1]["role"] == "assistant" for s in ds.values() for r in s)


@pytest.mark.parametrize(
    ("fmt", "extra"),
    [
        ("trl-sft", []),
        ("trl-sft", ["--prompt-completion"]),
        ("trl-dpo", ["--min-margin", "0.5", "--max-pairs-per-task", "2"]),
        ("sharegpt", ["--assistant-text", "think"]),
        ("sharegpt-ranking", []),
        ("react", ["--react-form", "text"]),
        ("trajectory", ["--reward", "math"]),
        ("trl-grpo", []),
        ("verl", ["--tool-class", "pkg.Calc", "--verl-reward", "exact"]),
        ("verl-sft", []),
    ],
)
def test_export_command_writes_every_format(
    fmt: str, extra: list[str], run: Path, tmp_path: Path, cli
) -> None:
    suffix = ".parquet" if fmt.startswith("verl") else ".jsonl"
    out = tmp_path / "x" / f"out{suffix}"
    rc, stdout, stderr = cli("export", run, "--format", fmt, "-o", out, *extra)
    assert rc == 0, stdout + stderr
    n = pq.read_table(out).num_rows if suffix == ".parquet" else len(lines(out))
    assert n > 0 and f"exported {n}" in stdout
    if suffix == ".jsonl":
        loaded = datasets.load_dataset(
            "json", data_files=str(out), split="train", cache_dir=str(tmp_path / "c")
        )
        assert loaded.to_list() == lines(out)
    if fmt == "verl":
        row = pq.read_table(out).to_pylist()[0]
        assert row["data_source"] == "agentmill/exact" and row["agent_name"] == "tool_agent"


def test_export_command_split_hf_and_tasks_option(run: Path, tmp_path: Path, cli) -> None:
    out = tmp_path / "hf"
    rc, stdout, _ = cli(
        "export",
        run / "filter" / "records.jsonl",
        "-f",
        "hf",
        "-o",
        out,
        "--split",
        "--val-fraction",
        "0.5",
        "--license",
        "apache-2.0",
        "--save-to-disk",
    )
    assert rc == 0 and "exported 6" in stdout
    assert "license: apache-2.0" in (out / "README.md").read_text()
    on_disk = datasets.load_from_disk(str(out))
    assert sum(len(s) for s in on_disk.values()) == 6
    # a trajectories file outside the run: tasks from --tasks
    alone = tmp_path / "alone.jsonl"
    alone.write_bytes((run / "filter" / "records.jsonl").read_bytes())
    rc, _, err = cli("export", alone, "-f", "trl-grpo", "-o", tmp_path / "g.jsonl")
    assert rc == 2 and "--tasks" in err
    rc, stdout, _ = cli(
        "export",
        alone,
        "-f",
        "trl-grpo",
        "-o",
        tmp_path / "g.jsonl",
        "--tasks",
        run / "source" / "records.jsonl",
        "--split",
        "--val-fraction",
        "0.5",
    )
    assert rc == 0 and "exported 3" in stdout
    # a tasks file as IN: one verl row per task, no trajectories to lend tools
    tasks_copy = tmp_path / "tasks_copy.jsonl"
    tasks_copy.write_bytes((run / "source" / "records.jsonl").read_bytes())
    rc, stdout, _ = cli("export", tasks_copy, "-f", "verl", "-o", tmp_path / "rl.parquet")
    assert rc == 0 and "exported 3" in stdout and not (tmp_path / "rl.tools.yaml").exists()
    sides = [p for p in tmp_path.glob("g.*.jsonl")]
    assert {r["split"] for p in sides for r in lines(p)} == {p.stem.split(".")[1] for p in sides}


def test_export_command_refuses_bad_input_in_one_line(run: Path, tmp_path: Path, cli) -> None:
    rc, _, err = cli("export", run, "-f", "verl", "-o", tmp_path / "v.parquet")
    assert rc == 2 and "set tool_class" in err and "--tool-class" in err
    rc, _, err = cli("export", run, "-f", "csv", "-o", tmp_path / "x")
    assert rc == 2 and "unknown export format" in err and "hf" in err
    rc, _, err = cli("export", run, "-o", tmp_path / "x", "--val-fraction", "2")
    assert rc == 2 and "--val-fraction" in err
    bad = tmp_path / "tasks.jsonl"
    bad.write_text('{"not": "a task"}\n')
    rc, _, err = cli("export", run, "-f", "trl-grpo", "-o", tmp_path / "g", "--tasks", bad)
    assert rc == 2 and "found none" in err
    rc, _, err = cli(
        "export", run, "-f", "trl-grpo", "-o", tmp_path / "g", "--tasks", bad, "--strict"
    )
    assert rc == 2 and "not_a_task" in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("x")
    rc, _, err = cli("export", run, "-f", "hf", "-o", taken)
    assert rc == 2 and "not an agentmill hf export" in err


def test_a_verl_export_without_tool_class_is_refused_before_the_rollout(
    tmp_path: Path, cli, write_config
) -> None:
    tasks = tmp_path / "t.jsonl"
    tasks.write_text('{"question": "2 * 2?", "answer": "4"}\n')
    cfg = run_config(tasks, [{"format": "verl"}])
    rc, _, err = cli("run", write_config(cfg), "--out", tmp_path / "run")
    assert rc == 2 and "export.0.tool_class" in err
    assert not (tmp_path / "run" / "rollout").exists()
