"""Shared fixtures. The real embedded model and the loopback `transformers serve` server are
session-scoped (started once); see model_fixtures.py."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = ["model_fixtures", "browser"]

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write a run config (dict) as YAML in tmp_path; the cache is private to the test."""

    def write(cfg: dict[str, Any], name: str = "run.yaml") -> Path:
        cfg = dict(cfg)
        cfg.setdefault("cache", {"path": str(tmp_path / "cache.sqlite")})
        path = tmp_path / name
        path.write_text(yaml.safe_dump(cfg))
        return path

    return write


@pytest.fixture
def tasks_file(tmp_path: Path) -> Callable[[int], Path]:
    """A JSONL file of `k` small arithmetic tasks."""

    def make(k: int, name: str = "tasks.jsonl") -> Path:
        path = tmp_path / name
        with path.open("w") as f:
            for i in range(k):
                f.write(f'{{"question": "What is {i} + {i}?", "answer": "{2 * i}"}}\n')
        return path

    return make


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Run the agentmill CLI in-process: returns (exit code, stdout, stderr)."""
    from agentmill.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        rc = main([str(a) for a in args])
        out = capsys.readouterr()
        return rc, out.out, out.err

    return run


CALC = {"tool_calls": [{"name": "calculator", "arguments": {"expression": "2+2"}}]}


@pytest.fixture
def scripted_run(tmp_path: Path, cli: Callable[..., tuple[int, str, str]]) -> Callable[..., Path]:
    """A run folder made by `agentmill run` with the scripted fake backend (not a model): 3 tasks
    (answer 4), 2 samples each, calculator tool, math reward, filter, trl-sft export. The
    replies cycle: call then answer 4 (correct) | call then `wrong` | a failed model call."""

    def make(name: str = "run", wrong: str = "5") -> Path:
        tasks = tmp_path / "tasks.jsonl"
        tasks.write_text(
            "".join(f'{{"question": "({i}) What is 2 + 2?", "answer": "4"}}\n' for i in range(3))
        )
        cfg = {
            "name": "scripted",
            "backends": {
                "teacher": {
                    "type": "scripted",
                    "replies": [CALC, "4", CALC, wrong, {"fail": "http_500"}],
                    "max_concurrency": 1,
                }
            },
            "sources": [{"path": str(tasks)}],
            "rollout": {"n": 2, "tools": ["calculator"]},
            "score": {"rewards": ["math"]},
            "filter": {"min_reward": 1.0},
            "export": [{"format": "trl-sft", "path": "sft.jsonl"}],
            "cache": {"path": str(tmp_path / "cache.sqlite")},
        }
        config = tmp_path / "scripted.yaml"
        config.write_text(yaml.safe_dump(cfg))
        out = tmp_path / name
        rc, stdout, _ = cli("run", config, "--out", out)
        assert rc in (0, 1), stdout  # 1: the scripted failures are failed trajectories
        return out

    return make
