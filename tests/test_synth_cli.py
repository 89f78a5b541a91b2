"""`agentmill synth` and the `synth` source of a run config, with the SCRIPTED backend (a fake,
not a model): outputs, drops with reasons, loading the tasks into a run, bad input (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml

from agentmill.config import FileSourceConfig
from agentmill.sources.files import iter_tasks

GOOD = json.dumps(
    {
        "query": "What's the weather in Paris today?",
        "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}, "step": 0}],
    }
)
ASK = json.dumps(
    {"query": "Please order 3 mugs for me", "calls": [], "ask_for": ["customer_email"]}
)


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def scripted_config(tmp_path: Path, replies: list[str], **extra) -> Path:
    cfg = {
        "backends": {"generator": {"type": "scripted", "replies": replies, "max_concurrency": 1}},
        "max_concurrency": 1,
        "cache": {"path": str(tmp_path / "cache.sqlite")},
        **extra,
    }
    path = tmp_path / "synth.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_synth_tools_writes_kept_dropped_and_stats(tmp_path, cli) -> None:
    config = scripted_config(
        tmp_path, [GOOD, "no idea", ASK], tool_kinds=["single", "single", "ask"]
    )
    out = tmp_path / "tasks.jsonl"
    rc, stdout, stderr = cli(
        "synth", "tools", "agentmill.synth.toolset", "-o", out, "--n", "3", "--config", config
    )
    assert rc == 0, stdout + stderr
    assert "dropped unparseable: 1" in stdout
    stats = json.loads((tmp_path / "tasks.stats.json").read_text())
    assert (
        stats["candidates"] == 3 and stats["kept"] == 2 and stats["dropped"] == {"unparseable": 1}
    )
    dropped = lines(tmp_path / "tasks.dropped.jsonl")
    assert [d["reason"] for d in dropped] == ["unparseable"] and dropped[0]["candidate"][
        "raw"
    ] == "no idea"
    # the kept tasks load through the file source with their expected calls
    tasks = list(iter_tasks(FileSourceConfig(path=out)))
    assert [len(t.expected_calls) for t in tasks] == [1, 0]
    assert tasks[1].metadata["ask_for"] == ["customer_email"]


def test_synth_output_loads_into_a_rollout_run_and_is_scored(tmp_path, cli, write_config) -> None:
    config = scripted_config(tmp_path, [GOOD], tool_kinds=["single"])
    out = tmp_path / "tasks.jsonl"
    assert (
        cli("synth", "tools", "agentmill.synth.toolset", "-o", out, "--n", "1", "--config", config)[
            0
        ]
        == 0
    )
    call = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "paris"}}]}
    run_cfg = {
        "backends": {"teacher": {"type": "scripted", "replies": [call, "It is cloudy."]}},
        "sources": [{"path": str(out)}],
        "rollout": {
            "backend": "teacher",
            "tools": [{"type": "function", "path": "agentmill.synth.toolset:get_weather"}],
        },
        "score": {"rewards": ["tool_call"]},
    }
    rc, stdout, stderr = cli("run", write_config(run_cfg), "--out", tmp_path / "run")
    assert rc == 0, stdout + stderr
    (scored,) = lines(tmp_path / "run" / "score" / "records.jsonl")
    assert scored["rewards"]["tool_call"] == 1.0


def test_synth_source_in_a_run_config_records_drops_and_resumes(
    tmp_path, cli, write_config
) -> None:
    run_cfg = {
        "backends": {
            "generator": {"type": "scripted", "replies": [GOOD, "garbage"], "max_concurrency": 1},
            "teacher": {"type": "scripted", "replies": ["It is cloudy in Paris."]},
        },
        "sources": [
            {
                "type": "synth",
                "kind": "tools",
                "n": 2,
                "tool_kinds": ["single"],
                "max_concurrency": 1,
            }
        ],
        "rollout": {"backend": "teacher"},
    }
    config = write_config(run_cfg)
    rc, stdout, stderr = cli("run", config, "--out", tmp_path / "run")
    assert rc == 0, stdout + stderr
    run = tmp_path / "run"
    (task,) = lines(run / "source" / "records.jsonl")
    assert (
        task["expected_calls"][0]["name"] == "get_weather"
        and task["provenance"]["source"] == "synth"
    )
    stats = json.loads((run / "source" / "stats.json").read_text())
    assert stats["tasks"] == 1 and stats["synth_dropped"] == {"synth_unparseable": 1}
    assert stats["bad_records"] == {}  # drops are the checks working, not bad input
    synth_calls = [c for c in lines(run / "calls.jsonl") if c["backend"] == "generator"]
    assert len(synth_calls) == 2  # the generator's calls are logged like the rollout's
    (failure,) = lines(run / "failures.jsonl")
    assert failure["reason"] == "synth_unparseable" and "garbage" in failure["error"]
    assert len(lines(run / "rollout" / "records.jsonl")) == 1
    rc, stdout, stderr = cli("run", config, "--out", run)  # resume: nothing new
    assert rc == 0, stdout + stderr
    assert len(lines(run / "source" / "records.jsonl")) == 1
    assert len(lines(run / "rollout" / "records.jsonl")) == 1


def test_dry_run_makes_no_generator_call(tmp_path, cli, write_config) -> None:
    run_cfg = {
        "backends": {
            # nothing listens there: any call would fail the run
            "generator": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
            "teacher": {"type": "scripted"},
        },
        "sources": [
            {"type": "synth", "kind": "tools", "n": 2, "tools": "agentmill.synth.toolset"},
            {"path": str(tmp_path / "tasks.jsonl")},
        ],
        "rollout": {"backend": "teacher"},
    }
    (tmp_path / "tasks.jsonl").write_text('{"question": "2+2?", "answer": "4"}\n')
    rc, stdout, stderr = cli("run", write_config(run_cfg), "--out", tmp_path / "run", "--dry-run")
    assert rc == 0, stdout + stderr
    assert "planned" in stdout and "tasks 1" in stdout


def test_run_config_names_an_undefined_synth_backend(tmp_path, cli, write_config) -> None:
    run_cfg = {
        "backends": {"teacher": {"type": "scripted"}},
        "sources": [{"type": "synth", "kind": "docs", "solver": "big"}],
        "rollout": {"backend": "teacher"},
    }
    rc, _, stderr = cli("run", write_config(run_cfg), "--out", tmp_path / "run")
    assert rc == 2 and "sources.0.generator 'generator' is not defined" in stderr


def _one_line_error(rc: int, stderr: str, needle: str) -> None:
    assert rc == 2, stderr
    assert needle in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty JSON list"),
        ('[{"description": "no name"}]', "a tool needs"),
        ('[{"name": "x", "parameters": {"type": 5}}]', "not a valid JSON schema"),
    ],
)
def test_malformed_tools_file(tmp_path, cli, content, needle) -> None:
    path = tmp_path / "tools.json"
    path.write_text(content)
    config = scripted_config(tmp_path, [GOOD])
    rc, _, stderr = cli("synth", "tools", path, "-o", tmp_path / "o.jsonl", "--config", config)
    _one_line_error(rc, stderr, needle)


def test_bad_inputs_exit_2_with_one_line(tmp_path, cli) -> None:
    out = tmp_path / "o.jsonl"
    config = scripted_config(tmp_path, [GOOD])
    rc, _, err = cli("synth", "tools", "no_such_module_xyz", "-o", out, "--config", config)
    _one_line_error(rc, err, "not an importable module")
    (tmp_path / "empty").mkdir()
    rc, _, err = cli("synth", "docs", tmp_path / "empty", "-o", out, "--config", config)
    _one_line_error(rc, err, "no documents")
    rc, _, err = cli("synth", "docs", tmp_path / "missing", "-o", out)
    _one_line_error(rc, err, "corpus not found")
    rc, _, err = cli(
        "synth",
        "tools",
        "agentmill.synth.toolset",
        "-o",
        out,
        "--config",
        config,
        "-c",
        "colour=red",
    )
    _one_line_error(rc, err, "unknown key 'colour'")
    bad = scripted_config(tmp_path, [GOOD], judge="nobody")
    rc, _, err = cli("synth", "tools", "agentmill.synth.toolset", "-o", out, "--config", bad)
    _one_line_error(rc, err, "judge 'nobody' is not defined")


def test_example_configs_load(monkeypatch) -> None:
    """examples/synth/*.yaml are not run by test_examples (they need a capable generator to
    keep tasks); they must at least load."""
    from agentmill.cli.synth import load_source
    from agentmill.configfile import load_config

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    for name in ("run_tools", "run_docs"):
        cfg = load_config(root / "examples" / "synth" / f"{name}.yaml")
        assert cfg.sources[0].type == "synth" and "generator" in cfg.used_backends()
    tools = load_source({"kind": "tools", "n": 1}, root / "examples/synth/tools.yaml", [])
    docs = load_source(
        {"kind": "docs", "corpus": "examples/data/synth_corpus.jsonl", "n": 1},
        root / "examples/synth/docs.yaml",
        [],
    )
    assert tools.tool_kinds and docs.evolve_rounds == 1
