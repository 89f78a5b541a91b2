"""Every examples/*.yaml runs (on a few tasks) so the examples never rot.

Backends of type `openai` are pointed at the real `transformers serve` loopback server
with the embedded model; `local` backends run the embedded model in-process.
"""

from pathlib import Path

import orjson
import pytest
import yaml

from agentmill.store import iter_jsonl

_HERE = Path(__file__).resolve().parents[1] / "examples"
# the run configs of examples/flywheel/ that are not covered by tests/test_flywheel.py: the
# measured flywheel's sampling run (forced `expected` calls, a distractor function tool) and
# the Studio loop's feedback run (real Studio file, embedded judge)
EXAMPLES = sorted(_HERE.glob("*.yaml")) + [
    _HERE / "flywheel" / "calc_sample.yaml",
    _HERE / "flywheel" / "studio_feedback.yaml",
]


def _overrides(example: Path, server: str, model_dir: Path) -> list[str]:
    cfg = yaml.safe_load(example.read_text())
    out = ["rollout.params.max_tokens=32", "rollout.agent.max_steps=2"]
    for name, b in cfg["backends"].items():
        if b["type"] == "openai":
            out += [
                f"backends.{name}.base_url={server}",
                f"backends.{name}.model={model_dir}",
                f"backends.{name}.api_key_env=AGENTMILL_EXAMPLE_KEY",
                # transformers serve has no tool parser for SmolLM2: use the text protocol
                f"backends.{name}.tool_protocol=text",
            ]
    return out


def test_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"quickstart.yaml", "openai_server.yaml"}


@pytest.mark.model
@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(
    example: Path, tmp_path, cli, loopback_server, smollm_path, monkeypatch
) -> None:
    monkeypatch.setenv("AGENTMILL_EXAMPLE_KEY", "unused-by-transformers-serve")
    out = tmp_path / "run"
    args = [
        "run",
        example,
        "--out",
        out,
        "--limit",
        "2",
        "-c",
        f"cache.path={tmp_path / 'c.sqlite'}",
    ]
    for o in _overrides(example, loopback_server, smollm_path):
        args += ["-c", o]
    rc, stdout, stderr = cli(*args)
    assert rc == 0, stdout + stderr
    n = yaml.safe_load(example.read_text())["rollout"]["n"]
    trajs = [orjson.loads(x) for _, x in iter_jsonl(out / "rollout" / "records.jsonl")]
    assert len(trajs) == 2 * n
    assert all(t["usage"]["completion_tokens"] > 0 for t in trajs)
    assert all(any(m["role"] == "assistant" for m in t["messages"]) for t in trajs)
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    funnel = manifest["stages"]["funnel"]
    assert funnel["trajectories"] == 2 * n
    for path, count in funnel["exported"].items():
        lines = (out / path).read_bytes().splitlines()
        assert len(lines) == count <= funnel["kept"]
        assert all("messages" in orjson.loads(line) for line in lines)
