"""Tasks from tool schemas: control flow with the SCRIPTED backend (a fake, not a model) and
schema validation. The real model runs in test_synth_e2e.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from agentmill.config import ScriptedBackendConfig
from agentmill.errors import UserError
from agentmill.records import ExpectedCall, Message, Trajectory
from agentmill.scoring.configs import ToolCallRewardConfig
from agentmill.scoring.tool_call import ToolCallReward
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.engine import synthesize
from agentmill.synth.toolsets import format_problem, load_tools


def reply(query: str, calls: list[dict[str, Any]] | None = None, ask_for=None, fence=True) -> str:
    body = json.dumps({"query": query, "calls": calls or [], "ask_for": ask_for or []})
    return f"Here you go:\n```json\n{body}\n```\nAnything else?" if fence else body


def call(name: str, step: int = 0, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments, "step": step}


def run(replies, kinds, judge: list[str] | None = None, **options):
    """Synthesize len(replies) candidates, one at a time so the scripted order holds."""
    backends = {"generator": ScriptedBackendConfig(replies=replies)}
    if judge is not None:
        backends["judge"] = ScriptedBackendConfig(replies=judge)
        options["judge"] = "judge"
    src = SynthSourceConfig(
        kind="tools", n=len(replies), tool_kinds=kinds, max_concurrency=1, **options
    )
    src.bind(backends, cache=False)
    outcomes, stats = synthesize(src)
    return outcomes, stats


def test_each_check_drops_with_its_reason() -> None:
    weather = call("get_weather", city="Paris")
    cases = [
        ("kept", "single", reply("What's the weather in Paris right now?", [weather])),
        ("unparseable", "single", "I cannot help with that."),
        ("bad_shape", "single", json.dumps({"calls": []})),
        ("kind_mismatch", "parallel", reply("Weather in Paris please", [weather])),
        ("unknown_tool", "single", reply("Book me a flight to Rome", [call("book_flight")])),
        (
            "missing_required",
            "single",
            reply("Order two mugs", [call("create_order", sku="MUG-01", quantity=2)]),
        ),
        (
            "wrong_type",
            "single",
            reply("What is the weather in 42?", [call("get_weather", city=42)]),
        ),
        (
            "bad_value",
            "single",
            reply("Weather in Paris in kelvin", [call("get_weather", city="Paris", unit="kelvin")]),
        ),
        (
            "execution_error",
            "single",
            reply("Weather on Mars?", [call("get_weather", city="Mars")]),
        ),
        ("ungrounded_argument", "single", reply("What's the weather like in Berlin?", [weather])),
        ("copied_example", "single", reply("What time is it in Lisbon right now?", [weather])),
        ("kind_mismatch", "ask", reply("Please order something nice", [], ask_for=["colour"])),
    ]
    outcomes, stats = run([c[2] for c in cases], [c[1] for c in cases])
    got = [o.reason or "kept" for o in outcomes]
    assert got == [c[0] for c in cases]
    assert all(o.detail for o in outcomes if not o.kept)
    assert stats["candidates"] == len(cases) == stats["kept"] + sum(stats["dropped"].values())
    kept = outcomes[0].task
    assert kept.expected_calls == [ExpectedCall(name="get_weather", arguments={"city": "Paris"})]
    assert kept.metadata["tool_results"][0]["name"] == "get_weather"
    assert "Paris" in kept.metadata["tool_results"][0]["result"]
    assert {t["function"]["name"] for t in kept.tools} >= {"get_weather", "create_order"}


def test_kinds_parallel_multistep_notool_ask_are_kept_and_scored() -> None:
    replies = [
        reply(
            "Weather in Paris and in Tokyo?",
            [call("get_weather", city="Paris"), call("get_weather", city="Tokyo")],
        ),
        reply(
            "Find a mug and tell me how many are in stock",
            [call("search_products", query="mug"), call("check_inventory", 1, sku="MUG-01")],
        ),
        reply("Tell me a joke about penguins, please."),
        reply("I want to order 2 kettles, can you do it?", ask_for=["customer_email"]),
    ]
    outcomes, stats = run(replies, ["parallel", "multi_step", "no_tool", "ask"])
    assert stats["kept"] == 4, [o.detail for o in outcomes]
    parallel, multi, no_tool, ask = (o.task for o in outcomes)
    assert {c.step for c in multi.expected_calls} == {0, 1}
    assert no_tool.expected_calls == [] and ask.expected_calls == []
    assert ask.metadata["ask_for"] == ["customer_email"]
    reward = ToolCallReward(ToolCallRewardConfig())
    asked = Trajectory(
        id="t",
        task_id=ask.id,
        messages=[Message(role="assistant", content="What is your customer email?")],
    )
    assert asyncio.run(reward.score(asked, ask)) == 1.0
    answered = Trajectory(
        id="u", task_id=no_tool.id, messages=[Message(role="assistant", content="Why...")]
    )
    assert asyncio.run(reward.score(answered, no_tool)) == 1.0


def test_judge_rejects_and_errors_are_drop_reasons() -> None:
    good = reply("What's the weather in Paris today?", [call("get_weather", city="Paris")])
    other = reply("How warm is it in London today?", [call("get_weather", city="London")])
    third = reply("Is it sunny in Tokyo today?", [call("get_weather", city="Tokyo")])
    judge = [
        '{"reason": "fine", "result": "GOOD"}',
        '```json\n{"result": "BAD", "reason": "wrong city"}\n```',
        "maybe?",
    ]
    outcomes, stats = run([good, other, third], ["single"], judge=judge)
    assert [o.reason for o in outcomes] == [None, "judge_rejected", "judge_error"]
    assert outcomes[1].detail == "wrong city"


def test_duplicate_questions_are_dropped() -> None:
    r1 = reply("What's the weather in Paris?", [call("get_weather", city="Paris")])
    r2 = reply("what's the weather in paris", [call("get_weather", city="Paris")])
    outcomes, stats = run([r1, r2], ["single"])
    assert [o.reason for o in outcomes] == [None, "duplicate"]
    assert stats["dropped"] == {"duplicate": 1}


def test_backend_failure_is_a_drop_not_a_crash() -> None:
    outcomes, stats = run([{"fail": "http_500"}], ["single"])
    assert stats["dropped"] == {"backend_http_500": 1}


@pytest.mark.parametrize(
    ("arguments", "reason"),
    [
        ({"sku": "MUG-01", "quantity": "two", "customer_email": "a@b.c"}, "wrong_type"),
        ({"sku": "MUG-01", "customer_email": "a@b.c"}, "missing_required"),
        (
            {"sku": "MUG-01", "quantity": 2, "customer_email": "a@b.c", "gift": True},
            "unknown_argument",
        ),
        ({"sku": "MUG-01", "quantity": 2, "customer_email": "a@b.c"}, None),
    ],
)
def test_schema_validation(arguments, reason) -> None:
    tools = load_tools("agentmill.synth.toolset")
    found = format_problem([ExpectedCall(name="create_order", arguments=arguments)], tools)
    assert (found[0] if found else None) == reason


def test_json_tool_file_is_validated_and_schema_only_tools_are_not_executed(tmp_path) -> None:
    path = tmp_path / "tools.json"
    schema = {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"id": {"type": "integer"}},
            "required": ["id"],
        },
    }
    path.write_text(json.dumps([schema]))
    tools = load_tools(str(path))
    assert tools.callables == {} and list(tools.schemas) == ["lookup"]
    assert (
        format_problem([ExpectedCall(name="lookup", arguments={"id": "x"})], tools)[0]
        == "wrong_type"
    )
    outcomes, _ = run(
        [reply("Look up record 7 for me", [call("lookup", id=7)])], ["single"], tools=str(path)
    )
    assert outcomes[0].kept and "tool_results" not in outcomes[0].task.metadata
    path.write_text(json.dumps([{"name": "bad", "parameters": {"type": "nonsense"}}]))
    with pytest.raises(UserError, match="not a valid JSON schema"):
        load_tools(str(path))
    path.write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        load_tools(str(path))
