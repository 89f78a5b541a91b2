"""The API key is read from the named variable and never written anywhere."""

import os
import subprocess
import sys
from pathlib import Path

from agentmill.testing.stub_server import run_stub_in_thread

KEY = "sk-test-VERY-SECRET-4242-abcdef"


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_key_never_reaches_run_folder_cache_or_logs(tmp_path, write_config) -> None:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        '{"prompt": "hello"}\n{"prompt": "FAULT=500x99 always fails"}\n'
        '{"prompt": "FAULT=401x99 refused"}\n'
    )
    with run_stub_in_thread(require_key=KEY) as (server, url):
        cfg = write_config(
            {
                "name": "s",
                "sources": [{"path": str(tasks)}],
                "backends": {
                    "teacher": {
                        "type": "openai",
                        "base_url": url,
                        "model": "stub",
                        "api_key_env": "AGENTMILL_TEST_KEY",
                        "max_retries": 1,
                        "backoff_base_s": 0.01,
                    }
                },
            }
        )
        out = tmp_path / "run"
        env = {**os.environ, "AGENTMILL_TEST_KEY": KEY}
        cmd = [sys.executable, "-m", "agentmill", "-v", "run", str(cfg), "--out", str(out)]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        assert done.returncode == 1, done.stderr  # two items failed on purpose
        assert server.log and any(e["outcome"] == "ok" for e in server.log)  # the key worked
        status = subprocess.run(
            [sys.executable, "-m", "agentmill", "status", str(out)],
            env=env,
            capture_output=True,
            text=True,
        )
        env.pop("AGENTMILL_TEST_KEY")
        missing = subprocess.run(cmd + ["--new"], env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "AGENTMILL_TEST_KEY is not set" in missing.stderr
    written = _files(tmp_path)  # run folders, cache, failures, call log, config
    assert any(p.name == "cache.sqlite" for p in written) and (out / "failures.jsonl").exists()
    for p in written:
        assert KEY.encode() not in p.read_bytes(), p
    for stream in (done.stdout, done.stderr, status.stdout, missing.stdout, missing.stderr):
        assert KEY not in stream
