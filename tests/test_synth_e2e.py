"""End to end: `agentmill synth tools` and `agentmill synth docs` with the REAL embedded model
through the REAL loopback `transformers serve` server (session fixture), on a few tools and
documents. The run completes, every candidate is kept or dropped with a reason, and the kept
tasks load into a rollout run on the same server."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
import yaml

DOCS = [
    {"id": "ada", "title": "Ada Vell", "text": "Ada Vell was born in Pellam."},
    {"id": "pellam", "title": "Pellam", "text": "Pellam is a village where Ada Vell was born."},
]
# one small tool keeps the prompts short: the model runs on a shared CPU
TOOLS = '''
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny" if city.strip().lower() in ("paris", "oslo") else f"no station in {city}"
'''


def lines(path: Path) -> list[dict]:
    return [orjson.loads(x) for x in path.read_bytes().splitlines() if x.strip()]


def check_outputs(out: Path, n: int) -> list[dict]:
    stem = out.name.removesuffix(".jsonl")
    stats = json.loads(out.with_name(f"{stem}.stats.json").read_text())
    kept, dropped = lines(out), lines(out.with_name(f"{stem}.dropped.jsonl"))
    assert stats["candidates"] == n == len(kept) + len(dropped)
    assert stats["kept"] == len(kept) and sum(stats["dropped"].values()) == len(dropped)
    assert all(d["reason"] and d["detail"] for d in dropped)
    return kept


@pytest.mark.model
@pytest.mark.slow
def test_synth_with_the_embedded_model_through_the_loopback_server(
    tmp_path, cli, write_config, loopback_server, smollm_path
) -> None:
    server = {
        "type": "openai",
        "base_url": loopback_server,
        "model": str(smollm_path),
        "tool_protocol": "text",
        "max_concurrency": 4,
    }
    settings = {
        "backends": {"generator": server},
        "params": {"max_tokens": 64},
        "solver_k": 1,
        "solver_max_steps": 2,
        "solver_params": {"max_tokens": 16},
        "min_hops": 2,
        "max_hops": 2,
        "doc_chars": 120,
        "cache": {"path": str(tmp_path / "cache.sqlite")},
    }
    config = tmp_path / "synth.yaml"
    config.write_text(yaml.safe_dump(settings))
    tools_out, tools_py = tmp_path / "tools.jsonl", tmp_path / "weather.py"
    tools_py.write_text(TOOLS)
    args = ["-c", "tool_kinds=[single, ask]"]
    rc, stdout, stderr = cli(
        "synth", "tools", tools_py, "-o", tools_out, "--n", "2", "--config", config, *args
    )
    assert rc == 0, stdout + stderr
    kept = check_outputs(tools_out, 2)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    docs_out = tmp_path / "docs.jsonl"
    rc, stdout, stderr = cli(
        "synth", "docs", corpus, "-o", docs_out, "--n", "1", "--config", config
    )
    assert rc == 0, stdout + stderr
    kept += check_outputs(docs_out, 1)
    # the kept tasks (however few a 135M generator gets through) load into a rollout run
    tasks = tmp_path / "all.jsonl"
    tasks.write_bytes(tools_out.read_bytes() + docs_out.read_bytes())
    run_cfg = {
        "backends": {"teacher": server},
        "sources": [{"path": str(tasks)}],
        "rollout": {"backend": "teacher", "params": {"max_tokens": 8}, "agent": {"max_steps": 1}},
        "score": {"rewards": ["tool_call"]},
    }
    rc, stdout, stderr = cli("run", write_config(run_cfg), "--out", tmp_path / "run")
    assert rc == 0, stdout + stderr
    source = lines(tmp_path / "run" / "source" / "records.jsonl") if kept else []
    assert len(source) == len(kept)
    assert [t.get("expected_calls") is not None for t in source] == [
        "expected_calls" in k for k in kept
    ]
