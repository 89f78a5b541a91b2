"""A run killed with SIGKILL at seeded points resumes with no lost, duplicated or redone work.

The backend is the real `openai` backend over real HTTP to a stub server on loopback (a
fake server: the property under test is the run store, not a model). The cache is OFF on
resume, so only the run store can prevent redoing finished work.
"""

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from agentmill.store import iter_jsonl
from agentmill.testing.stub_server import run_stub_in_thread

TASKS, N = 30, 3


def _complete_lines(path: Path) -> int:
    return sum(1 for _ in iter_jsonl(path))


def _wait_for_lines(path: Path, k: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists() and _complete_lines(path) >= k:
            return
        time.sleep(0.001)


def _run(cfg: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "agentmill", "run", str(cfg), "--out", str(out), "--no-cache"]


def test_sigkill_at_seeded_points_then_resume(tmp_path, write_config, tasks_file) -> None:
    rng = random.Random(1234)
    tasks = tasks_file(TASKS)
    env = {**os.environ, "COLUMNS": "120"}
    with run_stub_in_thread(latency_ms=40) as (server, url):
        cfg = write_config(
            {
                "name": "k",
                "sources": [{"path": str(tasks)}],
                "rollout": {"n": N},
                "backends": {
                    "teacher": {
                        "type": "openai",
                        "base_url": url,
                        "model": "stub",
                        "max_concurrency": 4,
                    }
                },
            }
        )
        # kill right after the k-th record is written; t seconds after the first record;
        # t seconds after the start (possibly before any record, or during start-up)
        points = [
            ("after_write", rng.randint(1, 30)),
            ("after_write", rng.randint(31, 80)),
            ("after_first", rng.uniform(0.0, 0.8)),
            ("from_start", rng.uniform(0.2, 1.5)),
        ]
        for idx, (kind, value) in enumerate(points):
            out = tmp_path / f"run{idx}"
            records = out / "rollout" / "records.jsonl"
            proc = subprocess.Popen(
                _run(cfg, out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if kind == "after_write":
                _wait_for_lines(records, value, proc)
            else:
                if kind == "after_first":
                    _wait_for_lines(records, 1, proc)
                time.sleep(value)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if idx == 1 and records.exists():  # simulate a write torn by the kill
                with records.open("ab") as f:
                    f.write(b'{"id": "torn-by-kill", "task_id": "x", "messa')
            time.sleep(0.3)  # let requests already sent by the dead process arrive
            on_disk = _complete_lines(records) if records.exists() else 0
            before = len(server.log)
            done = subprocess.run(_run(cfg, out), env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            resumed_calls = len(server.log) - before
            keys = Counter(
                (r["task_id"], r["sample_index"])
                for r in (orjson.loads(x) for _, x in iter_jsonl(records))
            )
            assert len(keys) == TASKS * N, (kind, value)
            assert set(keys.values()) == {1}, "a record was duplicated"
            assert resumed_calls == TASKS * N - on_disk, (kind, value, on_disk)
