"""The `openai` backend and a whole run against a REAL OpenAI-compatible server on loopback
(`transformers serve` with the embedded SmolLM2-135M)."""

import asyncio

import orjson
import pytest

from agentmill.backends.openai import OpenAIBackend
from agentmill.config import OpenAIBackendConfig
from agentmill.records import Message, SamplingParams
from agentmill.store import iter_jsonl

pytestmark = pytest.mark.model


def test_backend_against_transformers_serve(loopback_server, smollm_path) -> None:
    cfg = OpenAIBackendConfig(base_url=loopback_server, model=str(smollm_path), max_concurrency=4)
    backend = OpenAIBackend("teacher", cfg)
    prompts = ["What is the capital of France?", "Name a color.", "Say hello."]
    params = SamplingParams(temperature=0.0, max_tokens=12)

    async def go():
        try:
            await backend.check_reachable()
            return await asyncio.gather(
                *[
                    backend.complete([Message(role="user", content=p)], None, params)
                    for p in prompts
                ]
            )
        finally:
            await backend.aclose()

    results = asyncio.run(go())
    for c in results:
        assert c.text.strip() and c.attempts == 1
        assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= 12
        assert c.finish_reason in ("stop", "length")


def test_run_through_the_server_is_consistent(
    loopback_server, smollm_path, tmp_path, cli, write_config, tasks_file
) -> None:
    cfg = write_config(
        {
            "name": "srv",
            "sources": [{"path": str(tasks_file(3))}],
            "backends": {
                "teacher": {
                    "type": "openai",
                    "base_url": loopback_server,
                    "model": str(smollm_path),
                }
            },
            "rollout": {"n": 2, "params": {"temperature": 0.8, "max_tokens": 16, "seed": 5}},
        }
    )
    out = tmp_path / "run"
    rc, stdout, stderr = cli("run", cfg, "--out", out)
    assert rc == 0, stdout + stderr
    trajs = [orjson.loads(x) for _, x in iter_jsonl(out / "rollout" / "records.jsonl")]
    calls = [orjson.loads(x) for _, x in iter_jsonl(out / "calls.jsonl")]
    assert len(trajs) == 6 and len(calls) == 6
    assert sum(c["completion_tokens"] for c in calls) == sum(
        t["usage"]["completion_tokens"] for t in trajs
    )
    assert {t["params"]["seed"] for t in trajs} == {5, 6}  # sample i sends seed + i
    rc, stdout, _ = cli("run", cfg, "--out", out, "--new")  # same config: all from the cache
    assert rc == 0 and "model calls 0" in stdout and "cache hits 6" in stdout
