from pathlib import Path

import pytest
import yaml

from agentmill.config import additive_view, fingerprint
from agentmill.configfile import dump_config, load_config
from agentmill.errors import UserError

BASE = {
    "backends": {
        "teacher": {
            "type": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "api_key_env": "MY_KEY",
        }
    },
    "sources": [{"path": "tasks.jsonl"}],
    "rollout": {"n": 2, "params": {"temperature": 0.5}},
}


def _write(tmp_path: Path, data: dict) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "rollout.temprature=1",
            "unknown key 'rollout.temprature' (allowed here: agent, backend, few_shot, n, params, system_prompt, tools)",
        ),
        ("rollout.n=0", "rollout.n: input should be greater than or equal to 1 (got 0)"),
        (
            "backends.teacher.bogus=1",
            "unknown key 'backends.teacher.bogus' (allowed here: api_key_env,",
        ),
        (
            "rollout.backend=judge",
            "rollout.backend 'judge' is not defined in backends (defined: teacher)",
        ),
        ("backends.teacher.type=nope", "backends.teacher: missing or unknown 'type'"),
        ("backends.teacher.base_url=localhost:8000", "must start with http:// or https://"),
        (
            "backends.teacher.headers.Authorization=Bearer x",
            "put the key in an environment variable",
        ),
        ("rollout.params.top_p=2", "rollout.params.top_p: input should be less than or equal to 1"),
        (
            "rollout.tools=[{type: python, bogus: 1}]",
            "unknown key 'rollout.tools.0.bogus' (allowed here: cpu_s,",
        ),
        ("rollout.tools=[hammer]", "rollout.tools.0: missing or unknown 'type'"),
        (
            "score.rewards=[math, {type: regex, pattern: x, nope: 1}]",
            "'score.rewards.1.nope' (allowed here: full_match,",
        ),
        ("score.rewards=[math, math]", "two rewards are named 'math'"),
        ("filter.min_reward=high", "filter.min_reward: input should be a valid number"),
        ("export=[{format: csv}]", "export.0.format: input should be 'trl-sft', 'trl-dpo'"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(UserError) as e:
        load_config(_write(tmp_path, BASE), [override])
    text = str(e.value)
    assert message in text and "\n" not in text


def test_overrides_and_merged_files(tmp_path: Path) -> None:
    extra = tmp_path / "more.yaml"
    extra.write_text("rollout: {params: {max_tokens: 7}}\n")
    cfg = load_config(
        _write(tmp_path, BASE), ["rollout.n=5", str(extra), "rollout.params.stop=[a, b]"]
    )
    assert cfg.rollout.n == 5 and cfg.rollout.params.max_tokens == 7
    assert cfg.rollout.params.stop == ["a", "b"] and cfg.rollout.params.temperature == 0.5
    # relative source paths are relative to the config file's folder
    assert cfg.sources[0].path == (tmp_path / "tasks.jsonl").resolve()


def test_bad_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_fingerprint_ignores_transport_and_additive_settings(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE)
    base = load_config(p)
    same = load_config(
        p,
        [
            "rollout.n=9",
            "backends.teacher.max_concurrency=3",
            "backends.teacher.base_url=http://other:1/v1",
            "sources.0.limit=4",
            "backends.judge.type=scripted",
        ],
    )  # an unused backend does not count
    assert fingerprint(same) == fingerprint(base)
    assert additive_view(same) == {"sources": [{"limit": 4}], "rollout": {"n": 9}}
    for change in (
        "rollout.params.temperature=0.9",
        "backends.teacher.model=other",
        "seed=1",
        "rollout.system_prompt=be brief",
        "backends.teacher.extra_body.x=1",
    ):
        assert fingerprint(load_config(p, [change])) != fingerprint(base), change


def test_resolved_config_holds_only_the_key_variable_name(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MY_KEY", "sk-secret-123")
    text = dump_config(load_config(_write(tmp_path, BASE)))
    assert "MY_KEY" in text and "sk-secret-123" not in text


def test_recipe_configs_load() -> None:
    from agentmill.configfile import load_config

    root = Path(__file__).resolve().parents[1] / "examples" / "recipes"
    recovery = load_config(root / "recovery.yaml")
    assert recovery.rollout.agent.inject_tool_failure == 0.5
    assert recovery.sources[0].path.exists()
    cot = load_config(root / "cot.yaml")
    assert cot.dedup is not None and cot.balance is not None and cot.balance.key == "task_id"
