"""astuner's feedback-training config is accepted as is and mapped onto a RunConfig."""

from pathlib import Path

import pytest
import yaml

from agentmill.astuner import astuner_line, qa_hash
from agentmill.config import OpenAIBackendConfig, TraceSourceConfig
from agentmill.configfile import dump_config, load_config
from agentmill.errors import UserError
from agentmill.records import Message, Task

RUBRIC = "The answer must name the order id.\nNever promise a refund."


def _reader(**over) -> dict:
    ft = {
        "base_url": "./database.sqlite",
        "train_output_path": "./tasks.jsonl",
        "alien_llm_model": "qwen3-235b-a22b-instruct-2507",
        "alien_llm_response_length": 2048,
        "filters": [
            {
                "type": "llm_evaluate",
                "enabled": True,
                "params": {
                    "custom_rubrics": RUBRIC,
                    "temperature": 0.5,
                    "print_reason": False,
                    "max_thread": 16,
                },
            },
            {"type": "deduplication", "enabled": True, "params": {"similarity_threshold": 0.8}},
        ],
    }
    ft.update(over)
    return {"type": "tracing", "feedback_tracing": ft}


def _write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def env_endpoint(monkeypatch):
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "https://judge.example/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")


def _check_mapping(cfg, base: Path) -> None:
    src = cfg.sources[0]
    assert isinstance(src, TraceSourceConfig) and src.format == "agentscope-studio"
    assert src.path == (base / "database.sqlite").absolute()
    judge = cfg.judge
    assert judge.backend == "judge" and judge.custom_rubrics == RUBRIC
    assert (judge.temperature, judge.max_tokens, judge.max_concurrency) == (0.5, 2048, 16)
    assert judge.print_reason is False and judge.keep == ["GOOD"]
    backend = cfg.backends["judge"]
    assert isinstance(backend, OpenAIBackendConfig)
    assert backend.base_url == "https://judge.example/v1"
    assert backend.model == "qwen3-235b-a22b-instruct-2507"
    assert backend.api_key_env == "OPENAI_API_KEY"  # the NAME; the key never enters a config
    assert cfg.dedup.field == "query" and cfg.dedup.threshold == 0.8
    assert cfg.tasks_out.path == "./tasks.jsonl" and cfg.tasks_out.format == "astuner"
    assert cfg.tasks_out.val_fraction == 0.3
    assert not cfg.needs_rollout() and "teacher" not in cfg.backends


def test_top_level_task_reader_with_env_endpoint(tmp_path, monkeypatch, env_endpoint) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(_write(tmp_path / "a.yaml", {"task_reader": _reader()}))
    _check_mapping(cfg, tmp_path)
    assert "sk-test-not-a-real-key" not in dump_config(cfg)  # the key stays in the environment


def test_nested_under_astuner_ignores_other_keys_with_a_note(
    tmp_path, monkeypatch, capsys, env_endpoint
) -> None:
    monkeypatch.chdir(tmp_path)
    data = {
        "astuner": {
            "project_name": "shop-agent",
            "model": {"path": "Qwen/Qwen3-8B"},
            "trainer_common": {"total_epochs": 2},
            "task_reader": _reader(),
        }
    }
    cfg = load_config(_write(tmp_path / "a.yaml", data))
    _check_mapping(cfg, tmp_path)
    err = capsys.readouterr().err
    assert "model, project_name, trainer_common" in err and "task_reader" in err


def test_api_base_alias_and_no_key(tmp_path, monkeypatch) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:8000/v1")
    cfg = load_config(_write(tmp_path / "a.yaml", {"task_reader": _reader()}))
    assert cfg.backends["judge"].base_url == "http://127.0.0.1:8000/v1"
    assert cfg.backends["judge"].api_key_env is None


def test_endpoint_from_an_agentmill_config_alongside(tmp_path, env_endpoint) -> None:
    a = _write(tmp_path / "a.yaml", {"task_reader": _reader()})
    side = {
        "backends": {
            "judge": {"type": "openai", "base_url": "http://10.0.0.5:8000/v1", "api_key_env": "K"}
        },
        "name": "shop-feedback",
    }
    cfg = load_config(a, [str(_write(tmp_path / "endpoint.yaml", side))])
    judge = cfg.backends["judge"]
    assert judge.base_url == "http://10.0.0.5:8000/v1" and judge.api_key_env == "K"
    assert judge.model == "qwen3-235b-a22b-instruct-2507" and cfg.name == "shop-feedback"
    # a model given alongside wins over alien_llm_model; key=value overrides work too
    cfg = load_config(a, [str(tmp_path / "endpoint.yaml"), "backends.judge.model=local-judge"])
    assert cfg.backends["judge"].model == "local-judge"
    cfg = load_config(a, ["task_reader.feedback_tracing.alien_llm_response_length=512"])
    assert cfg.judge.max_tokens == 512


def test_missing_endpoint_is_one_line_naming_both_fixes(tmp_path, monkeypatch, cli) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE", "OPENAI_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    a = _write(tmp_path / "a.yaml", {"task_reader": _reader()})
    rc, _, stderr = cli("run", a, "--out", tmp_path / "run")
    assert rc == 2 and len(stderr.strip().splitlines()) == 1
    assert "OPENAI_BASE_URL" in stderr and "-c endpoint.yaml" in stderr
    assert "backends.judge" in stderr
    assert not (tmp_path / "run").exists()


def test_unknown_keys_are_refused_with_the_allowed_list(tmp_path, env_endpoint) -> None:
    bad = _write(tmp_path / "a.yaml", {"task_reader": _reader(alien_llm_temperature=0.1)})
    with pytest.raises(UserError) as e:
        load_config(bad)
    msg = str(e.value)
    assert "task_reader.feedback_tracing.alien_llm_temperature" in msg
    assert "base_url, train_output_path, alien_llm_model" in msg
    params = _reader()
    params["feedback_tracing"]["filters"][1]["params"]["similarity"] = 0.5
    with pytest.raises(UserError, match=r"filters\.1\.params\.similarity.*similarity_threshold"):
        load_config(_write(tmp_path / "b.yaml", {"task_reader": params}))
    kinds = _reader(filters=[{"type": "length_filter"}])
    with pytest.raises(UserError, match="llm_evaluate, deduplication"):
        load_config(_write(tmp_path / "c.yaml", {"task_reader": kinds}))
    with pytest.raises(UserError, match="type: tracing"):
        load_config(_write(tmp_path / "d.yaml", {"task_reader": {"type": "env_service"}}))
    with pytest.raises(UserError, match="train_output_path is missing"):
        load_config(_write(tmp_path / "e.yaml", {"task_reader": _reader(train_output_path="")}))


def test_similarity_threshold_and_disabled_filters(tmp_path, monkeypatch) -> None:
    for var in ("OPENAI_BASE_URL", "OPENAI_API_BASE"):
        monkeypatch.delenv(var, raising=False)
    reader = _reader()
    filters = reader["feedback_tracing"]["filters"]
    filters[0]["enabled"] = False  # no judge: no endpoint needed
    filters[1]["params"]["similarity_threshold"] = 0.65
    cfg = load_config(_write(tmp_path / "a.yaml", {"task_reader": reader}))
    assert cfg.judge is None and cfg.dedup.threshold == 0.65 and cfg.backends == {}
    filters[1]["enabled"] = False
    cfg = load_config(_write(tmp_path / "b.yaml", {"task_reader": reader}))
    assert cfg.dedup is None
    filters[1]["params"]["similarity_threshold"] = 1.5
    filters[1]["enabled"] = True
    with pytest.raises(UserError, match=r"dedup\.threshold"):
        load_config(_write(tmp_path / "c.yaml", {"task_reader": reader}))


def test_relative_base_url_from_cwd_else_beside_the_config(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:1/v1")
    conf, work = tmp_path / "conf", tmp_path / "work"
    conf.mkdir(), work.mkdir()
    (conf / "database.sqlite").write_bytes(b"")
    monkeypatch.chdir(work)
    a = _write(conf / "a.yaml", {"task_reader": _reader()})
    assert load_config(a).sources[0].path == conf / "database.sqlite"
    (work / "database.sqlite").write_bytes(b"")
    assert load_config(a).sources[0].path == work / "database.sqlite"


def test_astuner_task_line() -> None:
    task = Task.create(
        [Message(role="system", content="You sell shoes."), Message(role="user", content="Hi?")],
        ground_truth="Hello!",
        split="validation",
    )
    line = astuner_line(task, "tracing")
    assert line == {
        "main_query": "Hi?",
        "init_messages": [{"role": "system", "content": "You sell shoes."}],
        "task_id": task.id,
        "env_type": "tracing",
        "metadata": {"answer": "Hello!", "qa_hash": qa_hash("Hi?", "Hello!")},
        "split": "validation",
    }
