"""A tiny random-weight Llama for real trainer tests (TRL SFTTrainer, DPOTrainer) on CPU.

A test module loads the fixtures with `pytest_plugins = ["trainer_fixtures"]` and may import
the helpers below (PYTEST_DONT_REWRITE: so they are imported before pytest loads the plugin,
without pytest's warning that it cannot rewrite their asserts any more).

- `tool_tokenizer`: the embedded model's tokenizer (SmolLM2-135M, from `smollm_path`) with
  agentmill's tool template (`data/templates/tool_chat.jinja`) as its chat template.
- `tiny_llama`: a folder holding that tokenizer and a 2-layer Llama (hidden 64, vocabulary =
  the tokenizer's) with random weights; built once per session, loadable by path like any
  Hugging Face model, so the trainers can load their own copies (DPO's reference model too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agentmill.rollout.protocol import load_template

TINY_LLAMA = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}


@pytest.fixture(scope="session")
def tool_tokenizer(smollm_path: Path) -> Any:
    """The embedded model's tokenizer with our tool template as its chat template."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm_path, local_files_only=True)
    tok.chat_template = load_template()
    return tok


@pytest.fixture(scope="session")
def tiny_llama(tool_tokenizer: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a random-weight 2-layer Llama and `tool_tokenizer`, built once per session."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = tool_tokenizer
    config = LlamaConfig(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **TINY_LLAMA,
    )
    folder = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


# ---- trajectories: parallel calls, a tool error, multi-turn ---------------------------

WEATHER = {
    "name": "weather",
    "description": "Current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CALC = {
    "type": "function",
    "function": {
        "name": "calc",
        "description": "Evaluate an arithmetic expression",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
SYSTEM = "You are a terse assistant. Use the tools."


def _call(i: int, name: str, args: dict[str, Any]) -> Any:
    from agentmill.records import FunctionCall, ToolCall

    return ToolCall(id=f"call_{i}", function=FunctionCall(name=name, arguments=args))


def _msg(role: str, content: str | None = None, **kw: Any) -> Any:
    from agentmill.records import Message

    return Message(role=role, content=content, **kw)


def _tool(i: int, name: str, text: str) -> Any:
    return _msg("tool", text, tool_call_id=f"call_{i}", name=name)


def _conversations(answers: dict[str, str]) -> dict[str, list[Any]]:
    """Task id -> messages; `answers` gives each task's final answer (to vary samples)."""
    return {
        "parallel": [
            _msg("system", SYSTEM),
            _msg("user", "What is the weather in Paris and in Oslo, and what is 17 * 3?"),
            _msg(
                "assistant",
                tool_calls=[
                    _call(0, "weather", {"city": "Paris"}),
                    _call(1, "weather", {"city": "Oslo"}),
                    _call(2, "calc", {"expression": "17 * 3"}),
                ],
            ),  # fmt: skip
            _tool(0, "weather", "Paris: sunny, 21 C"),
            _tool(1, "weather", "Oslo: light snow, -2 C"),
            _tool(2, "calc", "51"),
            _msg("assistant", answers["parallel"]),
        ],
        "tool-error": [
            _msg("user", "Compute 10 / (5 - 5) for me."),
            _msg(
                "assistant",
                "Let me compute it.",
                tool_calls=[_call(0, "calc", {"expression": "10 / (5 - 5)"})],
            ),
            _tool(0, "calc", "error: ZeroDivisionError: division by zero"),
            _msg("assistant", answers["tool-error"]),
        ],  # fmt: skip
        "multi-turn": [
            _msg("system", SYSTEM),
            _msg("user", "Hi there!"),
            _msg("assistant", "Hello. What do you need?"),
            _msg("user", "Is it cold in Reykjavik?"),
            _msg("assistant", tool_calls=[_call(0, "weather", {"city": "Reykjavik"})]),
            _tool(0, "weather", "Reykjavik: windy, 3 C"),
            _msg("assistant", answers["multi-turn"]),
        ],
    }


GOOD = {
    "parallel": "Paris is sunny (21 C), Oslo has light snow (-2 C), and 17 * 3 = 51.",
    "tool-error": "The expression divides by zero, so it has no value.",
    "multi-turn": "Yes, fairly: 3 C and windy.",
}
BAD = {
    "parallel": "Both cities are rainy and 17 * 3 = 41.",
    "tool-error": "It equals 2.",
    "multi-turn": "No, it is 25 C and sunny.",
}


def dpo_samples() -> list[Any]:
    """Two scored samples per task; the failed tool-error sample retries the call, so its
    side of the pair holds a tool call and a tool result too."""
    from agentmill.records import Trajectory

    bad = agent_trajectories(BAD, 0.0)
    retry = bad[1].messages[:3] + [
        _msg("assistant", tool_calls=[_call(1, "calc", {"expression": "10 / 0.5"})]),
        _tool(1, "calc", "20.0"),
        _msg("assistant", BAD["tool-error"]),
    ]
    bad[1] = Trajectory(**{**bad[1].model_dump(), "messages": retry})
    return agent_trajectories() + bad


def agent_trajectories(answers: dict[str, str] = GOOD, reward: float = 1.0) -> list[Any]:
    """One trajectory per task: parallel calls, a tool error, a multi-turn chat."""
    from agentmill.records import Trajectory

    return [
        Trajectory(
            id=f"{task}-{int(reward)}",
            task_id=task,
            sample_index=int(reward),
            messages=messages,
            tools=[WEATHER, CALC],
            rewards={"correct": reward},
        )
        for task, messages in _conversations(answers).items()
    ]


def export_jsonl(path: Path, trajectories: list[Any], fmt: str, **options: Any) -> list[Any]:
    """Export with our exporters (`ExportConfig` options) into `path`; the records written.
    Nothing may be refused: every trajectory here is exportable."""
    import json

    from agentmill.export import export_records
    from agentmill.export.configs import ExportConfig

    records, skipped = export_records(ExportConfig(format=fmt, **options), trajectories)
    assert not skipped, skipped
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records
