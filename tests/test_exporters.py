"""Exporters on a shared set of trajectories: parallel calls, a tool error, multi-turn records,
a malformed call; round trips through `datasets` and pyarrow; reward bridges vs the score stage."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml
from trainer_fixtures import CALC, WEATHER  # the tool schemas the trainer tests use too

from agentmill.export.dpo import dpo_pairs
from agentmill.export.grpo import to_grpo
from agentmill.export.react import to_react
from agentmill.export.sharegpt import (
    dataset_info_entry,
    to_sharegpt,
    to_sharegpt_pair,
    validate_sharegpt,
)
from agentmill.export.splits import task_split
from agentmill.export.trajectory import to_trajectory_record
from agentmill.export.trl_sft import ExportError, to_trl_sft
from agentmill.export.verl import read_verl_sft, to_verl_sft, write_verl_rl, write_verl_sft
from agentmill.integrations.trl import format_reward_func, math_reward_func, reward_func
from agentmill.integrations.verl import compute_score
from agentmill.records import FunctionCall, Message, Task, ToolCall, Trajectory
from agentmill.scoring import build_reward
from agentmill.scoring.configs import ScoreConfig
from agentmill.scoring.stage import score_trajectory

TOOLS = [WEATHER, CALC]


def call(i: int, name: str, args: dict[str, Any] | None, raw: str | None = None) -> ToolCall:
    return ToolCall(id=f"c{i}", function=FunctionCall(name=name, arguments=args, raw_arguments=raw))


def user(text: str) -> Message:
    return Message(role="user", content=text)


def asst(text: str | None = None, calls: list[ToolCall] | None = None) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls)


def tool(i: int, name: str, text: str) -> Message:
    return Message(role="tool", tool_call_id=f"c{i}", name=name, content=text)


def traj(tid: str, messages: list[Message], **kw: Any) -> Trajectory:
    return Trajectory(
        id=tid, task_id=kw.pop("task_id", "task-" + tid), messages=messages, tools=TOOLS, **kw
    )


SYSTEM = Message(role="system", content="Be brief.")
PARALLEL = traj(
    "parallel",
    [
        SYSTEM,
        user("Weather in Paris and 6*7?"),
        asst(
            "Checking.",
            [call(0, "weather", {"city": "Paris"}), call(1, "calc", {"expression": "6*7"})],
        ),
        tool(0, "weather", "sunny"),
        tool(1, "calc", "42"),
        asst("Sunny; \\boxed{42}"),
    ],
)
TOOL_ERROR = traj(
    "error",
    [
        user("6*7?"),
        asst(None, [call(0, "calc", {"expression": "6*"})]),
        tool(0, "calc", "Error: syntax"),
        asst(None, [call(1, "calc", {"expression": "6*7"})]),
        tool(1, "calc", "42"),
        asst("42"),
    ],
)
MULTI_TURN = traj(
    "multi",
    [
        user("Weather?"),
        asst("Which city?"),
        user("Rome"),
        asst(None, [call(0, "weather", {"city": "Rome"})]),
        tool(0, "weather", "rain"),
        asst("Rain."),
    ],
)
MALFORMED = traj(
    "bad",
    [
        user("6*7?"),
        asst(None, [call(0, "calc", None, raw="{6*7")]),
        tool(0, "calc", "Error: bad arguments"),
        asst("42"),
    ],
)
GOOD = [PARALLEL, TOOL_ERROR, MULTI_TURN]


def test_sharegpt_records_validate_and_merge_turns() -> None:
    recs = [to_sharegpt(t, t.tools) for t in GOOD]
    assert all(validate_sharegpt(r) == [] for r in recs)
    p = recs[0]
    assert [t["from"] for t in p["conversations"]] == [
        "human",
        "function_call",
        "observation",
        "gpt",
    ]
    assert p["system"] == "Be brief." and p["id"] == "parallel" and p["task_id"] == "task-parallel"
    assert json.loads(p["conversations"][1]["value"])[1] == {
        "name": "calc",
        "arguments": {"expression": "6*7"},
    }
    assert p["conversations"][2]["value"] == "sunny\n\n42"
    assert json.loads(p["tools"]) == TOOLS
    think = to_sharegpt(PARALLEL, TOOLS, assistant_text="think")
    assert think["conversations"][1]["value"].startswith("<think>Checking.</think>[")
    assert validate_sharegpt(think) == []
    with pytest.raises(ExportError) as e:
        to_sharegpt(MALFORMED, TOOLS)
    assert e.value.reason == "malformed_tool_call"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda r: r["conversations"].pop(), "odd number of turns"),
        (
            lambda r: r["conversations"].__setitem__(0, {"from": "gpt", "value": "x"}),
            "turn 0 is gpt",
        ),
        (lambda r: r["conversations"][1].__setitem__("value", "{not json"), "not JSON"),
        (lambda r: r.__setitem__("tools", TOOLS), "tools is not a JSON string"),
        (lambda r: r.__setitem__("tools", "[{"), "tools is not valid JSON"),
        (
            lambda r: r["conversations"][1].__setitem__("value", '{"name": "x"}'),
            "lacks name/arguments",
        ),
        (lambda r: r["conversations"][2].__setitem__("from", "human"), None),  # still legal
    ],
)
def test_sharegpt_validator_catches_planted_violations(mutate: Any, expected: str | None) -> None:
    rec = to_sharegpt(PARALLEL, TOOLS)
    mutate(rec)
    problems = validate_sharegpt(rec)
    assert (problems == []) if expected is None else any(expected in p for p in problems)


def test_dataset_info_entry() -> None:
    assert dataset_info_entry("a.json") == {
        "file_name": "a.json",
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system", "tools": "tools"},
    }
    assert dataset_info_entry("a.json", ranking=True)["ranking"] is True


def sample(
    i: int, reward: float, messages: list[Message], tokens: int = 0, task: str = "T"
) -> Trajectory:
    t = traj(f"s{i}", messages, task_id=task, sample_index=i, rewards={"math": reward})
    t.usage.completion_tokens = tokens
    return t


Q = [SYSTEM, user("6*7?")]
DIRECT = [*Q, asst("\\boxed{42}")]
VIA_TOOL = [
    *Q,
    asst(None, [call(0, "calc", {"expression": "6*7"})]),
    tool(0, "calc", "42"),
    asst("\\boxed{42}"),
]
WRONG_AFTER_TOOL = [
    *Q,
    asst(None, [call(5, "calc", {"expression": "6*7"})]),
    tool(5, "calc", "42"),
    asst("41"),
]


def test_dpo_chosen_is_simplest_and_prefix_is_shared() -> None:
    samples = [
        sample(0, 1.0, VIA_TOOL),
        sample(1, 0.0, WRONG_AFTER_TOOL),
        sample(2, 1.0, DIRECT),
        sample(3, 0.0, [*Q, asst("40")]),
    ]
    pairs = dpo_pairs(samples, reward="math", min_margin=0.5, max_pairs_per_task=5)
    assert {p["chosen_id"] for p in pairs} == {"s2"}  # no tool call beats the tool call
    assert {p["rejected_id"] for p in pairs} == {"s1", "s3"}
    for p in pairs:
        assert p["prompt"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "6*7?"},
        ]
        assert p["chosen"][0]["role"] == "assistant" and p["rejected"][0]["role"] == "assistant"
        assert p["tools"] == TOOLS and p["task_id"] == "T"
    # tool-call ids differ but calls and results are shared: they go into the prompt
    pair = dpo_pairs([sample(0, 1.0, VIA_TOOL), sample(1, 0.0, WRONG_AFTER_TOOL)], reward="math")[0]
    assert [m["role"] for m in pair["prompt"]] == ["system", "user", "assistant", "tool"]
    assert pair["prompt"][2]["tool_calls"][0]["function"]["arguments"] == {"expression": "6*7"}
    assert pair["chosen"] == [{"role": "assistant", "content": "\\boxed{42}"}]
    assert pair["rejected"] == [{"role": "assistant", "content": "41"}]


def test_dpo_margins_caps_and_simpler_mode() -> None:
    samples = [
        sample(0, 1.0, DIRECT),
        sample(1, 0.7, [*Q, asst("41")]),
        sample(2, 0.0, [*Q, asst("4")]),
    ]
    assert [p["rejected_id"] for p in dpo_pairs(samples, reward="math", min_margin=0.5)] == ["s2"]
    assert len(dpo_pairs(samples, reward="math", min_margin=0.2, max_pairs_per_task=5)) == 2
    assert dpo_pairs(samples, reward="math", min_margin=2.0) == []
    ties = [sample(0, 1.0, VIA_TOOL, tokens=90), sample(1, 1.0, DIRECT, tokens=10)]
    assert dpo_pairs(ties, reward="math") == []
    simpler = dpo_pairs(ties, reward="math", simpler_mode=True, simpler_min_steps=1)
    assert [(p["chosen_id"], p["rejected_id"], p["kind"]) for p in simpler] == [
        ("s1", "s0", "simpler")
    ]
    assert (
        dpo_pairs(
            ties, reward="math", simpler_mode=True, simpler_min_steps=5, simpler_min_tokens=100
        )
        == []
    )
    dropped: Counter[str] = Counter()
    bad = sample(3, 0.0, MALFORMED.messages)
    assert dpo_pairs([bad, sample(4, 1.0, DIRECT)], reward="math", dropped=dropped) == []
    assert dropped == {"malformed_tool_call": 1}


def test_sharegpt_ranking_form_from_dpo_pair() -> None:
    pairs = dpo_pairs([sample(0, 1.0, VIA_TOOL), sample(1, 0.0, [*Q, asst("40")])], reward="math")
    rec = to_sharegpt_pair(pairs[0])
    assert validate_sharegpt(rec) == []
    assert rec["chosen"]["from"] == "function_call" and rec["rejected"] == {
        "from": "gpt",
        "value": "40",
    }
    assert [t["from"] for t in rec["conversations"]] == ["human"]
    rec["conversations"].append({"from": "gpt", "value": "x"})
    assert any("even number of prompt turns" in p for p in validate_sharegpt(rec))


def test_react_text_form() -> None:
    rec = to_react(PARALLEL, TOOLS)
    assert (
        rec["prompt"].startswith("Be brief.")
        and f"weather: {WEATHER['description']}" in rec["prompt"]
    )
    assert rec["prompt"].endswith("Question: Weather in Paris and 6*7?\n")
    assert rec["completion"].splitlines() == [
        "Thought: Checking.",
        "Action: weather",
        'Action Input: {"city": "Paris"}',
        "Observation: sunny",
        "Action: calc",
        'Action Input: {"expression": "6*7"}',
        "Observation: 42",
        "Final Answer: Sunny; \\boxed{42}",
    ]
    assert "Observation: Error: syntax" in to_react(TOOL_ERROR, TOOLS)["completion"]
    assert to_react(PARALLEL, TOOLS, form="text")["text"] == rec["prompt"] + rec["completion"]
    for bad, reason in ((MULTI_TURN, "multi_user_turns"), (MALFORMED, "malformed_tool_call")):
        with pytest.raises(ExportError) as e:
            to_react(bad, TOOLS)
        assert e.value.reason == reason


def test_trajectory_form_and_split() -> None:
    rec = to_trajectory_record(MALFORMED.model_copy(update={"rewards": {"a": 1.0, "b": 0.0}}))
    assert (
        rec["final_reward"] == 0.5
        and rec["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{6*7"
    )
    splits = Counter(task_split(f"task-{i}", 0.2) for i in range(1000))
    assert 150 < splits["validation"] < 250
    assert task_split("x") == task_split("x")


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_exports_load_unchanged_with_datasets(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    pairs = dpo_pairs(
        [
            sample(0, 1.0, VIA_TOOL),
            sample(
                1,
                0.0,
                [
                    *Q,
                    asst(None, [call(2, "weather", {"city": "Oslo"})]),
                    tool(2, "weather", "snow"),
                    asst("40"),
                ],
            ),
        ],
        reward="math",
    )
    exports = {
        "sft": [to_trl_sft(t, t.tools) for t in GOOD],
        "sharegpt": [to_sharegpt(t, t.tools) for t in GOOD],
        "dpo": pairs,
        "react": [to_react(t, TOOLS) for t in (PARALLEL, TOOL_ERROR)],
    }
    for name, rows in exports.items():
        path = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        # tools with different argument names: no null-filled keys may appear
        assert loaded.to_list() == rows, name


def test_verl_rl_parquet_and_tool_config(tmp_path: Path) -> None:
    tasks = [
        Task.create("6*7?", "42", tools=[CALC]),
        Task.create("Weather?", None, tools=[WEATHER]),
        Task.create("2+2?", ["4", "four"]),
        Task.create([SYSTEM]),
    ]
    dropped: Counter[str] = Counter()
    path, config = write_verl_rl(
        tasks, tmp_path / "rl.parquet", tool_class="pkg.Tool", dropped=dropped
    )
    assert dropped == {"no_user_turn": 1}
    table = pq.read_table(path)
    assert set(table.column_names) == {
        "data_source",
        "prompt",
        "ability",
        "reward_model",
        "extra_info",
        "agent_name",
    }
    rows = table.to_pylist()
    assert rows[0]["reward_model"] == {"style": "rule", "ground_truth": "42"}
    assert rows[0]["extra_info"]["tools_kwargs"] == {
        "calc": {"create_kwargs": {"ground_truth": "42"}},
        "weather": {"create_kwargs": {"ground_truth": "42"}},
    }
    assert [r["agent_name"] for r in rows] == ["tool_agent", "tool_agent", "single_turn_agent"]
    assert [r["extra_info"]["index"] for r in rows] == [0, 1, 2]
    assert rows[2]["extra_info"]["need_tools_kwargs"] is False
    assert rows[0]["extra_info"]["split"] in ("train", "validation")
    assert rows[0]["prompt"] == [{"role": "user", "content": "6*7?"}]
    tools = yaml.safe_load(config.read_text())["tools"]
    assert [t["tool_schema"]["function"]["name"] for t in tools] == ["calc", "weather"]
    assert tools[1]["tool_schema"]["type"] == "function" and tools[0]["class_name"] == "pkg.Tool"


def test_verl_sft_parquet_round_trip(tmp_path: Path) -> None:
    dropped: Counter[str] = Counter()
    path = write_verl_sft([*GOOD, MALFORMED], tmp_path / "sft.parquet", dropped)
    assert dropped == {"malformed_tool_call": 1}
    table = pq.read_table(path)
    assert str(table.schema.field("tools").type).startswith("list<")
    assert read_verl_sft(path) == [to_verl_sft(t) for t in GOOD]
    calls = table.to_pylist()[0]["messages"][2]["tool_calls"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"city": "Paris"},
        {"expression": "6*7"},
    ]


SCORED = [
    (PARALLEL, Task.create("q", "42")),
    (TOOL_ERROR, Task.create("q", "42")),
    (MULTI_TURN, Task.create("q", "rain")),
    (MALFORMED, Task.create("q", "42")),
    (traj("frac", [user("half?"), asst("it is \\boxed{\\frac{1}{2}}")]), Task.create("q", "0.5")),
    (traj("list", [user("capital?"), asst("Paris.")]), Task.create("q", ["paris", "Lyon"])),
]


def stage_scores(kind: str | dict[str, Any]) -> list[float | None]:
    reward = build_reward(ScoreConfig(rewards=[kind]).rewards[0])
    scored = [asyncio.run(score_trajectory(t, task, [reward])) for t, task in SCORED]
    return [s.rewards.get(reward.name) for s in scored]


def completions() -> list[list[dict[str, Any]]]:
    return [
        [m.to_openai(dict_arguments=True) for m in t.messages if m.role != "system"]
        for t, _ in SCORED
    ]


@pytest.mark.parametrize(
    "kind", ["math", "format", "exact", {"type": "format", "require": ["boxed"]}]
)
def test_trl_reward_functions_equal_score_stage(kind: str | dict[str, Any]) -> None:
    rows = [to_grpo(task) for _, task in SCORED]
    columns = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    prompts = [r["prompt"] for r in rows]
    assert reward_func(kind)(prompts, completions(), **columns) == stage_scores(kind)
    if kind in ("math", "exact"):  # they read only the final text: a string completion agrees
        texts = [c[-1]["content"] for c in completions()]
        assert reward_func(kind)(prompts, texts, **columns) == stage_scores(kind)


def test_named_trl_reward_functions() -> None:
    rows = [to_grpo(task) for _, task in SCORED]
    truth = {
        "ground_truth": [r["ground_truth"] for r in rows],
        "ground_truth_format": [r["ground_truth_format"] for r in rows],
    }
    assert math_reward_func(None, completions(), **truth) == stage_scores("math")
    assert format_reward_func(None, completions()) == stage_scores("format")
    assert (
        math_reward_func.__name__ == "math_reward_func" and reward_func("math").__name__ == "math"
    )
    assert math_reward_func(None, ["\\boxed{1}"], ground_truth=[None]) == [None]


@pytest.mark.parametrize("kind", ["math", "exact", "contains"])
def test_verl_compute_score_equals_score_stage(kind: str, tmp_path: Path) -> None:
    path, _ = write_verl_rl(
        [task for _, task in SCORED], tmp_path / "rl.parquet", reward=kind, tool_class="x"
    )
    rows = pq.read_table(path).to_pylist()
    got = [
        compute_score(
            r["data_source"],
            t.messages[-1].text,
            r["reward_model"]["ground_truth"],
            extra_info=r["extra_info"],
        )
        for (t, _), r in zip(SCORED, rows, strict=True)
    ]
    assert got == [v if v is not None else 0.0 for v in stage_scores(kind)]


def test_doctests_of_the_export_modules() -> None:
    import doctest
    import importlib

    names = ["card", "configs", "dpo", "grpo", "hf", "react", "sharegpt", "splits"]
    names += ["trajectory", "trl_sft", "verl", "write"]
    modules = ["agentmill.export", *(f"agentmill.export.{n}" for n in names)]
    modules += ["agentmill.integrations.trl", "agentmill.integrations.verl"]
    for name in modules:
        result = doctest.testmod(importlib.import_module(name))
        assert result.attempted > 0 and result.failed == 0, name
