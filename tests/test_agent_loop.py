"""The agent loop's control flow, driven by the scripted FAKE backend (no model here)."""

import asyncio
from typing import Any

from agentmill.backends.instrumented import Instrumented
from agentmill.backends.scripted import ScriptedBackend
from agentmill.config import ScriptedBackendConfig
from agentmill.records import Message, SamplingParams
from agentmill.rollout.agent import INJECTED_FAILURE, Agent
from agentmill.rollout.configs import AgentConfig
from agentmill.rollout.tools import ToolError


class Echo:
    name = "echo"

    def schema(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": "echo",
                "description": "echo",
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        }

    async def call(self, arguments: dict[str, Any]) -> str:
        if arguments.get("x") == "bad":
            raise ToolError("x must not be 'bad'")
        if arguments.get("x") == "crash":
            raise RuntimeError("boom")
        if arguments.get("x") == "slow":
            await asyncio.sleep(5)
        return f"echo:{arguments.get('x')}"


def _run(replies: list, cfg: AgentConfig | None = None, text: bool = False):
    backend = ScriptedBackend("fake", ScriptedBackendConfig(replies=replies))
    agent = Agent(
        backend=Instrumented(backend, "fp", 0),
        tools={"echo": Echo()},
        cfg=cfg or AgentConfig(tool_timeout_s=0.5),
        params=SamplingParams(max_tokens=50),
        text_protocol=text,
    )
    result = asyncio.run(agent.run([Message(role="user", content="go")]))
    return result, backend


def _tool_outputs(result) -> list[str]:
    return [m.content for m in result.messages if m.role == "tool"]


def test_native_call_then_answer() -> None:
    r, backend = _run([{"tool_calls": [{"name": "echo", "arguments": '{"x": "a"}'}]}, "done a"])
    assert [m.role for m in r.messages] == ["user", "assistant", "tool", "assistant"]
    assert (
        _tool_outputs(r) == ["echo:a"] and r.final_answer == "done a" and r.stop_reason == "answer"
    )
    assert r.messages[2].tool_call_id == r.messages[1].tool_calls[0].id
    assert r.stats.steps == 2 and r.stats.tool_calls == 1 and r.stats.by_tool == {"echo": 1}
    assert backend.calls[0][0].content == "go"  # the backend saw the prompt
    assert len(backend.calls[1]) == 3  # and then the call and its observation


def test_text_protocol_call_with_two_calls_in_one_turn() -> None:
    two = (
        'thinking <tool_call>\n{"name": "echo", "arguments": {"x": "1"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "echo", "arguments": {"x": "2"}}\n</tool_call>'
    )
    r, _ = _run([two, '<tool_call>{"name": "echo", "arguments": {"x": "3"}}</tool_call>', "ok"])
    assert _tool_outputs(r) == ["echo:1", "echo:2", "echo:3"]
    first = r.messages[1]
    assert first.content == "thinking" and [c.function.arguments for c in first.tool_calls] == [
        {"x": "1"},
        {"x": "2"},
    ]
    ids = [c.id for m in r.messages for c in (m.tool_calls or [])]
    assert len(set(ids)) == 3  # unique across turns
    assert r.stats.tool_calls == 3 and r.stats.malformed_calls == 0


def test_malformed_and_unknown_calls_become_error_observations() -> None:
    bad = '<tool_call>{"name": "echo", "arguments": {"x": </tool_call>'
    r, _ = _run([bad, {"tool_calls": [{"name": "hammer", "arguments": {}}]}, "gave up"])
    outs = _tool_outputs(r)
    assert (
        outs[0].startswith("Error: the tool call could not be parsed") and "<tool_call>" in outs[0]
    )
    assert "unknown tool 'hammer'" in outs[1] and "echo" in outs[1]
    assert (r.stats.malformed_calls, r.stats.unknown_tool_calls) == (1, 1)
    assert r.messages[1].tool_calls[0].function.arguments is None  # raw text kept
    assert r.final_answer == "gave up"


def test_tool_errors_crashes_and_timeouts_are_observations() -> None:
    calls = [{"name": "echo", "arguments": {"x": x}} for x in ("bad", "crash", "slow")]
    r, _ = _run([{"tool_calls": calls}, "done"])
    outs = _tool_outputs(r)
    assert outs[0] == "Error: x must not be 'bad'"
    assert outs[1] == "Error: RuntimeError: boom"
    assert "did not finish within 0.5 s" in outs[2]
    assert r.stats.tool_errors == 3 and r.stop_reason == "answer"


def test_limits_end_the_trajectory_with_a_stop_reason() -> None:
    loop = {"tool_calls": [{"name": "echo", "arguments": {"x": "again"}}]}
    r, _ = _run([loop], AgentConfig(max_steps=3))
    assert r.stop_reason == "max_steps" and r.stats.steps == 3 and r.final_answer is None
    long_reply = {"text": "word " * 10, "tool_calls": loop["tool_calls"]}
    r, _ = _run([long_reply], AgentConfig(max_total_tokens=25))
    assert r.stop_reason == "max_tokens" and r.usage.completion_tokens >= 25
    backend = ScriptedBackend("fake", ScriptedBackendConfig(replies=[loop], delay_s=0.2))
    agent = Agent(
        backend=Instrumented(backend, "fp", 0),
        tools={"echo": Echo()},
        cfg=AgentConfig(max_wall_s=0.5, max_steps=100),
        params=SamplingParams(),
    )
    r = asyncio.run(agent.run([Message(role="user", content="go")]))
    assert r.stop_reason == "timeout" and 1 <= r.stats.steps <= 3


def test_length_stop_and_first_step_tool_choice() -> None:
    r, backend = _run([{"text": "cut", "finish_reason": "length"}])
    assert r.stop_reason == "length" and r.final_answer == "cut"
    seen: list[str] = []

    class Spy(ScriptedBackend):
        async def complete(self, messages, tools, params):
            seen.append(params.tool_choice)
            return await super().complete(messages, tools, params)

    spy = Spy("fake", ScriptedBackendConfig(replies=[loop_reply(), "done"]))
    agent = Agent(
        backend=Instrumented(spy, "fp", 0),
        tools={"echo": Echo()},
        cfg=AgentConfig(first_tool_choice="required"),
        params=SamplingParams(),
    )
    asyncio.run(agent.run([Message(role="user", content="go")]))
    assert seen == ["required", "auto"]


def loop_reply() -> dict:
    return {"tool_calls": [{"name": "echo", "arguments": {"x": "y"}}]}


def test_injected_failure_then_recovery() -> None:
    call = {"tool_calls": [{"name": "echo", "arguments": '{"x": "a"}'}]}
    r, _ = _run([call, call, "done a"], AgentConfig(inject_tool_failure=1.0))
    assert _tool_outputs(r) == [INJECTED_FAILURE, "echo:a"]  # the retry gets the real result
    assert r.injected == r.messages[1].tool_calls[0].id and r.recovered()
    assert r.stats.tool_errors == 1 and r.final_answer == "done a"
    # the model gives up after the failure: injected, not recovered
    r, _ = _run([call, "sorry"], AgentConfig(inject_tool_failure=1.0))
    assert r.injected is not None and not r.recovered()
    # rate 0: never; a malformed first call is not the one that fails
    r, _ = _run([call, "done a"], AgentConfig())
    assert r.injected is None and _tool_outputs(r) == ["echo:a"]
    bad = {"tool_calls": [{"name": "echo", "arguments": "{x"}]}
    r, _ = _run([bad, call, "done a"], AgentConfig(inject_tool_failure=1.0))
    assert _tool_outputs(r)[1] == INJECTED_FAILURE


def test_injection_is_chosen_by_the_sample_key() -> None:
    agent = Agent(
        backend=None, tools={}, cfg=AgentConfig(inject_tool_failure=0.5), params=SamplingParams()
    )
    picks = [agent._injects(f"task{i}#0", 0) for i in range(400)]
    assert picks == [agent._injects(f"task{i}#0", 0) for i in range(400)]  # stable on resume
    assert 150 < sum(picks) < 250


def test_tool_choice_none_never_runs_a_call() -> None:
    """A step told `tool_choice: none` (e.g. `first_tool_choice: expected` on a task that needs
    no tool) is an answer even when the model writes a call: the tool never runs, the call text
    stays in the answer (so rewards and the protocol-tag filter reject it), like the API."""
    text_call = '<tool_call>\n{"name": "echo", "arguments": {"x": "y"}}\n</tool_call>'
    for reply in (text_call, loop_reply()):
        r, _ = _run([reply, "done"], AgentConfig(first_tool_choice="none"))
        assert r.stats.steps == 1 and r.stats.tool_calls == 0 and r.stop_reason == "answer"
        assert r.messages[-1].tool_calls is None
        assert r.final_answer == (text_call if isinstance(reply, str) else "")
    # later steps are unforced again: the same reply after an answer-less first step is a call
    r, _ = _run([text_call, "done"], AgentConfig(first_tool_choice="auto"))
    assert r.stats.tool_calls == 1 and r.final_answer == "done"
