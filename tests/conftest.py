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

pytest_plugins = ["model_fixtures"]

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
