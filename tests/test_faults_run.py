"""A whole run against a loopback server that misbehaves (a fake server: the property under
test is what the run does with faults): transient faults succeed after retries, permanent
ones land in failures.jsonl with their reasons, nothing crashes, Retry-After is honoured."""

import orjson

from agentmill.store import iter_jsonl
from agentmill.testing.stub_server import run_stub_in_thread

TRANSIENT = {
    "FAULT=429x2": 3,
    "FAULT=500x1": 2,
    "FAULT=hangx1": 2,
    "FAULT=resetx2": 3,
    "FAULT=badjsonx1": 2,
    "FAULT=503x1": 2,
}
PERMANENT = {
    "FAULT=500x99": ("http_500", 4),
    "FAULT=400x9": ("http_400", 1),
    "FAULT=404x9": ("http_404", 1),
}


def _lines(path):
    return [orjson.loads(x) for _, x in iter_jsonl(path)]


def test_run_survives_faults(tmp_path, cli, write_config) -> None:
    prompts = [f"good {i}" for i in range(6)] + list(TRANSIENT) + list(PERMANENT)
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b"".join(orjson.dumps({"prompt": p}) + b"\n" for p in prompts))
    with run_stub_in_thread(retry_after_s=1.0, hang_s=5.0) as (server, url):
        cfg = write_config(
            {
                "name": "faults",
                "sources": [{"path": str(tasks)}],
                "backends": {
                    "teacher": {
                        "type": "openai",
                        "base_url": url,
                        "model": "stub",
                        "timeout_s": 0.5,
                        "max_retries": 3,
                        "backoff_base_s": 0.01,
                        "backoff_max_s": 0.05,
                    }
                },
            }
        )
        out = tmp_path / "run"
        rc, stdout, stderr = cli("run", cfg, "--out", out)
        log = list(server.log)
    assert rc == 1, stdout + stderr  # finished, with failed items
    trajs = {t["messages"][-2]["content"]: t for t in _lines(out / "rollout" / "records.jsonl")}
    assert set(trajs) == {p for p in prompts if p not in PERMANENT}
    calls = {c["key"]: c for c in _lines(out / "calls.jsonl")}
    by_prompt = {t["messages"][-2]["content"]: t["task_id"] + "#0" for t in trajs.values()}
    for prompt, attempts in TRANSIENT.items():
        assert trajs[prompt]["final_answer"] == f"echo: {prompt}"
        assert calls[by_prompt[prompt]]["attempts"] == attempts, prompt
    fails = {f["reason"]: f for f in _lines(out / "failures.jsonl")}
    assert {r for r, _ in PERMANENT.values()} == set(fails)
    for prompt, (reason, attempts) in PERMANENT.items():
        assert fails[reason]["attempts"] == attempts and fails[reason]["stage"] == "rollout"
        assert [e["key"] for e in log].count(prompt) == attempts
    # the server's own clock: each retry after a 429 waited for Retry-After (1 s)
    arrivals = [e["t"] for e in log if e["key"] == "FAULT=429x2"]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert len(arrivals) == 3 and all(g >= 0.95 for g in gaps), gaps
