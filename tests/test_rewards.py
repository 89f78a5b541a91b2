"""The rewards: tool calls, format, text, code (in the real sandbox), and the objects the score
stage builds from configs, applied to Trajectory/Task records."""

from __future__ import annotations

import asyncio
import doctest
import re
import time
from typing import Any

import pytest

from agentmill.records import (
    AgentStats,
    ExpectedCall,
    FunctionCall,
    Message,
    Task,
    ToolCall,
    Trajectory,
)
from agentmill.rollout.configs import PythonToolConfig
from agentmill.scoring import build_reward
from agentmill.scoring import code as code_mod
from agentmill.scoring import format as format_mod
from agentmill.scoring import math as math_mod
from agentmill.scoring import text as text_mod
from agentmill.scoring import tool_call as tool_call_mod
from agentmill.scoring.configs import (
    CodeRewardConfig,
    ContainsRewardConfig,
    ExactRewardConfig,
    FormatRewardConfig,
    MathRewardConfig,
    RegexRewardConfig,
    ScoreConfig,
    ToolCallRewardConfig,
)
from agentmill.scoring.tool_call import tool_call_breakdown, tool_call_score

# --- helpers -------------------------------------------------------------------------------


def E(name: str, step: int = 0, **arguments: Any) -> ExpectedCall:
    return ExpectedCall(name=name, arguments=arguments, step=step)


def traj(*messages: Message, final: str | None = None, **kw: Any) -> Trajectory:
    return Trajectory(id="t", task_id="x", messages=list(messages), final_answer=final, **kw)


def calling(*calls: tuple[str, str | dict[str, Any]]) -> Message:
    """An assistant turn making these calls (arguments as JSON text or a dict)."""
    tool_calls = [
        ToolCall(id=f"c{i}", function=FunctionCall.parse(name, args))
        for i, (name, args) in enumerate(calls)
    ]
    return Message(role="assistant", tool_calls=tool_calls)


def say(text: str) -> Message:
    return Message(role="assistant", content=text)


def score(reward: Any, trajectory: Trajectory, task: Task | None) -> float | None:
    return asyncio.run(reward.score(trajectory, task))


# --- tool_call_score -----------------------------------------------------------------------

WEATHER = [E("weather", city="Paris")]
PARALLEL = [E("weather", city="Paris"), E("weather", city="Rome")]
DEPENDENT = [E("search", 0, q="flights to Rome"), E("book", 1, flight="AZ 123")]


@pytest.mark.parametrize(
    ("calls", "expected", "kw", "want"),
    [
        ([("weather", {"city": "Paris"})], WEATHER, {}, 1.0),
        ([("weather", {"city": "  PARIS "})], WEATHER, {}, 1.0),
        ([("forecast", {"city": "Paris"})], WEATHER, {}, 0.0),  # wrong name
        ([], WEATHER, {}, 0.0),  # missing call
        ([("weather", None)], WEATHER, {}, 0.0),  # malformed arguments
        ([("weather", {"city": "Paris"}), ("weather", {"city": "Oslo"})], WEATHER, {}, 2 / 3),
        ([("weather", {"city": "Rome"}), ("weather", {"city": "Paris"})], PARALLEL, {}, 1.0),
        (
            [("weather", {"city": "Rome"}), ("weather", {"city": "Paris"})],
            PARALLEL,
            {"order_sensitive": True},
            0.5,
        ),
        ([("search", {"q": "flights to rome"}), ("book", {"flight": "AZ 123"})], DEPENDENT, {}, 1),
        (
            [("book", {"flight": "AZ 123"}), ("search", {"q": "flights to rome"})],
            DEPENDENT,
            {},
            0.5,
        ),
        ([("sum", {"a": 2, "b": "3.0"})], [E("sum", a="2", b=3)], {}, 1.0),
        ([("sum", {"a": 2, "b": 4})], [E("sum", a=2, b=3)], {}, 0.5),  # partial arguments
        ([("sum", {"a": 2})], [E("sum", a=2, b=3)], {}, 0.5),
        ([("f", {"xs": [1, "2"], "opt": {"k": "V"}})], [E("f", xs=[1, 2], opt={"k": "v"})], {}, 1),
        ([("f", {"flag": "true"})], [E("f", flag=True)], {}, 1.0),
        ([("f", {"flag": 1})], [E("f", flag=True)], {}, 0.0),
    ],
)
def test_tool_call_score(calls: list, expected: list, kw: dict, want: float) -> None:
    assert tool_call_score(calls, expected, **kw) == pytest.approx(want)


def test_unspecified_expectation_has_no_opinion() -> None:
    assert tool_call_score([("weather", {"city": "Paris"})], None) is None
    assert tool_call_score([], None) is None


@pytest.mark.parametrize(
    ("calls", "ask_for", "text", "want"),
    [
        ([], None, "Paris is sunny.", 1.0),  # no call needed, none made
        ([("weather", {"city": "Paris"})], None, "", 0.0),  # a call where none was right
        ([], ["city"], "Which city would you like the weather for?", 1.0),
        ([], ["departure_date"], "What date do you want to leave?", 1.0),  # one word of it
        ([], ["departureDate"], "Your departure date, please?", 1.0),
        ([], ["city|town"], "Which town?", 1.0),  # a listed synonym
        ([], ["city"], "The weather is nice today.", 0.0),  # answers without asking
        ([], ["city"], "Can I help with anything else?", 0.0),  # asks, but not for it
        ([("weather", {"city": "Paris"})], ["city"], "Which city?", 0.0),  # guessed instead
    ],
)
def test_no_call_expected(calls: list, ask_for: list | None, text: str, want: float) -> None:
    assert tool_call_score(calls, [], ask_for=ask_for, final_text=text) == want


def test_breakdown_components() -> None:
    calls = [("book", {"flight": "AZ 123"}), ("search", {"q": "x"}), ("search", None)]
    b = tool_call_breakdown(calls, DEPENDENT)
    assert (b.made, b.expected, b.malformed) == (3, 2, 1)
    assert b.matched == 1 and b.name_accuracy == 0.5
    assert not b.order_ok  # book came before the search it depends on
    assert b.argument_match == 1.0  # the one pair kept, book, has the right flight
    assert b.score == pytest.approx(2 * 1.0 / 5)
    in_order = tool_call_breakdown(
        [("search", {"q": "x"}), ("book", {"flight": "az 123"})], DEPENDENT
    )
    assert in_order.order_ok and in_order.argument_match == 0.5 and in_order.matched == 2


def test_big_parallel_steps_stay_fast() -> None:
    expected = [E("get", id=i) for i in range(8)]
    calls = [("get", {"id": i}) for i in reversed(range(8))] + [("get", {"id": 99})] * 20
    start = time.monotonic()
    assert tool_call_score(calls, expected) == pytest.approx(16 / 36)
    # past MAX_GROUP parallel calls, a step is matched in its listed order
    many = [E("get", id=i) for i in range(20)]
    assert tool_call_score([("get", {"id": i}) for i in range(20)], many) == 1.0
    assert time.monotonic() - start < 10


# --- reward objects built from configs -------------------------------------------------------


def test_tool_call_reward_on_records() -> None:
    reward = build_reward(ToolCallRewardConfig())
    task = Task.create("Weather in Paris and Rome?", expected_calls=PARALLEL)
    good = traj(
        calling(("weather", '{"city": "Rome"}'), ("weather", {"city": "Paris"})),
        Message(role="tool", tool_call_id="c0", content="sunny"),
        say("Both sunny."),
    )
    broken = traj(calling(("weather", '{"city": "Rome"'), ("weather", {"city": "Paris"})))
    assert reward.name == "tool_call"
    assert score(reward, good, task) == 1.0
    assert score(reward, broken, task) == 0.5
    assert score(reward, good, Task.create("no expectation")) is None
    assert score(reward, good, None) is None


def test_tool_call_reward_ask_for_from_metadata() -> None:
    reward = build_reward(ToolCallRewardConfig(name="asks"))
    task = Task.create("Book me a flight.", expected_calls=[], metadata={"ask_for": "destination"})
    assert score(reward, traj(say("Sure! What is your destination?")), task) == 1.0
    assert score(reward, traj(final="Booked a flight to Rome."), task) == 0.0
    assert score(reward, traj(calling(("book", {"to": "Rome"}))), task) == 0.0


def test_math_reward_on_records() -> None:
    reward = build_reward(MathRewardConfig())
    task = Task.create("Natalia sold 48 clips ...", ground_truth="48 + 24 = 72\n#### 72")
    assert score(reward, traj(final=r"So \boxed{72}."), task) == 1.0
    assert score(reward, traj(say("The answer is 72 clips.")), task) == 1.0  # no final_answer
    assert score(reward, traj(final="The answer is 70."), task) == 0.0
    assert score(reward, traj(), task) == 0.0
    assert score(reward, traj(final="72"), Task.create("no ground truth")) is None
    assert score(reward, traj(final="72"), None) is None
    number_task = Task.create("half?", ground_truth=0.5)
    assert score(reward, traj(final=r"\boxed{\frac{1}{2}}"), number_task) == 1.0


def test_rewards_from_score_config_shorthand() -> None:
    cfg = ScoreConfig.model_validate(
        {"rewards": ["math", {"type": "regex", "name": "cites", "pattern": r"\[\d+\]"}]}
    )
    rewards = [build_reward(c) for c in cfg.rewards]
    assert [r.name for r in rewards] == ["math", "cites"]
    t = traj(final=r"As [1] shows, \boxed{4}.")
    assert [score(r, t, Task.create("2+2?", ground_truth="4")) for r in rewards] == [1.0, 1.0]


# --- format ----------------------------------------------------------------------------------


def test_format_checks() -> None:
    all_checks = FormatRewardConfig(
        require=["boxed", "answer", "well_formed_calls", "no_tool_errors"]
    )
    reward = build_reward(all_checks)
    clean = traj(calling(("f", {})), say(r"\boxed{1}"), agent=AgentStats(tool_calls=1))
    assert score(reward, clean, None) == 1.0
    assert score(reward, traj(final="1", stop_reason="answer"), None) == 0.75  # not boxed
    assert score(reward, traj(final=r"\boxed{1", stop_reason="max_steps"), None) == 0.5
    assert score(reward, traj(calling(("f", "{oops")), final=r"\boxed{1}"), None) == 0.75
    stats = AgentStats(tool_calls=2, tool_errors=1)
    assert score(reward, traj(final=r"\boxed{1}", agent=stats), None) == 0.75
    stats = AgentStats(tool_calls=2, malformed_calls=1, unknown_tool_calls=1)
    assert score(reward, traj(final=r"\boxed{1}", agent=stats), None) == 0.5
    errored = traj(
        Message(role="tool", tool_call_id="c0", content="Error: no such city"), final="x"
    )
    assert format_mod.no_tool_errors(errored) is False
    assert score(build_reward(FormatRewardConfig()), traj(final="  "), None) == 0.5
    assert score(build_reward(FormatRewardConfig(require=[])), clean, None) is None


# --- text ------------------------------------------------------------------------------------


def test_text_pure_functions() -> None:
    assert text_mod.exact_match("The Answer.", "the answer") == 1.0
    assert text_mod.exact_match("The Answer.", "the answer", normalize=False) == 0.0
    assert text_mod.contains("It is PARIS.", "paris") == 1.0
    assert text_mod.contains("It is PARIS.", "paris", case_sensitive=True) == 0.0
    assert text_mod.contains("anything", "") == 0.0
    assert text_mod.regex_match("order #123", r"#\d+") == 1.0
    assert text_mod.regex_match("order #123", r"#\d+", full_match=True) == 0.0


def test_text_rewards() -> None:
    task = Task.create("Capital of France?", ground_truth="Paris")
    either = Task.create("A French city?", ground_truth=["Lyon", "Paris"])
    t = traj(final="paris!")
    assert score(build_reward(ExactRewardConfig()), t, task) == 1.0
    assert score(build_reward(ExactRewardConfig()), t, either) == 1.0
    assert score(build_reward(ExactRewardConfig(normalize=False)), t, task) == 0.0
    assert score(build_reward(ExactRewardConfig()), t, Task.create("?")) is None
    assert score(build_reward(ContainsRewardConfig()), traj(final="It's Paris."), task) == 1.0
    contains_cs = build_reward(ContainsRewardConfig(case_sensitive=True))
    assert score(contains_cs, traj(final="paris"), task) == 0.0
    assert score(build_reward(ContainsRewardConfig()), t, None) is None


def test_regex_reward() -> None:
    from_task = build_reward(RegexRewardConfig(full_match=True))
    assert score(from_task, traj(final="A-17"), Task.create("?", ground_truth=r"[A-Z]-\d+")) == 1.0
    assert (
        score(from_task, traj(final="id A-17"), Task.create("?", ground_truth=r"[A-Z]-\d+")) == 0.0
    )
    assert score(from_task, traj(final="x"), Task.create("?", ground_truth="(unclosed")) is None
    assert score(from_task, traj(final="x"), None) is None
    fixed = build_reward(RegexRewardConfig(pattern=r"\[\d+\]"))
    assert score(fixed, traj(final="see [2]"), None) == 1.0
    with pytest.raises(re.error):
        build_reward(RegexRewardConfig(pattern="(unclosed"))


# --- code (real sandbox) ---------------------------------------------------------------------

SANDBOX = PythonToolConfig(timeout_s=8, cpu_s=8, memory_mb=256)
ADD_TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]


def solved(code: str) -> Trajectory:
    return traj(say("Let me think."), say(f"Here it is:\n```python\n{code}\n```\nDone."))


@pytest.fixture(scope="module")
def code_reward() -> Any:
    return build_reward(CodeRewardConfig(sandbox=SANDBOX))


def test_code_all_tests_pass(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    assert score(code_reward, solved("def add(a, b):\n    return a + b"), task) == 1.0


def test_code_partial_credit(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    # right only when a + b == 3 by luck: the first test passes, the others fail
    assert score(code_reward, solved("def add(a, b):\n    return 3"), task) == pytest.approx(1 / 3)


def test_code_test_functions_and_ground_truth(code_reward: Any) -> None:
    tests = (
        "from solution import square\n\n"
        "def test_small():\n    assert square(2) == 4\n\n"
        "def test_negative():\n    assert square(-3) == 9\n\n"
        "def test_wrong_on_purpose():\n    assert square(1) == 2\n"
    )
    task = Task.create("Write square(x).", ground_truth=tests)
    t = traj(
        final="```py\ndef square(x):\n    return x * x\n\nif __name__ == '__main__':\n    input()\n```"
    )
    assert score(code_reward, t, task) == pytest.approx(2 / 3)


def test_code_without_code_block_or_tests(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    assert score(code_reward, traj(final="def add(a, b): return a + b"), task) == 0.0
    assert score(code_reward, solved("x = 1"), Task.create("no tests")) is None
    assert (
        score(code_reward, solved("x = 1"), Task.create("?", metadata={"tests": "def ("})) is None
    )
    assert score(code_reward, solved("x = 1"), None) is None


def test_code_infinite_loop_is_zero_not_a_hang(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    start = time.monotonic()
    assert score(code_reward, solved("while True:\n    pass"), task) == 0.0
    looping_add = "def add(a, b):\n    while a == 10:\n        pass\n    return a + b"
    assert score(code_reward, solved(looping_add), task) == pytest.approx(2 / 3)
    assert time.monotonic() - start < 3 * SANDBOX.timeout_s


def test_code_killed_sandbox_keeps_earlier_results() -> None:
    """A test that disarms the harness's alarm runs into the sandbox's own wall clock."""
    quick = build_reward(CodeRewardConfig(sandbox=PythonToolConfig(timeout_s=2, cpu_s=2)))
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    stubborn = (
        "import signal\n"
        "def add(a, b):\n"
        "    if a == 10:\n"
        "        signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "        while True:\n"
        "            pass\n"
        "    return a + b\n"
    )
    start = time.monotonic()
    assert score(quick, solved(stubborn), task) == pytest.approx(2 / 3)
    assert time.monotonic() - start < 10


def test_code_fake_result_lines_do_not_count(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    spoof = (
        "import os, sys\n"
        "for i in range(3):\n"
        '    line = f\'@@ {i} 1 \\n{i} 1\\n{{"test": {i}, "ok": true}}\\n\'\n'
        "    print(line); sys.__stdout__.write(line); os.write(1, line.encode())\n"
        "    sys.stderr.write(line)\n"
        "def add(a, b):\n    return -999\n"
    )
    assert score(code_reward, solved(spoof), task) == 0.0


def test_code_flooding_output_still_scores(code_reward: Any) -> None:
    task = Task.create("Write add(a, b).", metadata={"tests": ADD_TESTS})
    noisy = "print('x' * 100_000)\ndef add(a, b):\n    print('y' * 100_000)\n    return a + b"
    assert score(code_reward, solved(noisy), task) == 1.0


def test_code_helpers() -> None:
    assert code_mod.extract_code("```python\na\n```\n```js\nb\n```") == "a\n"
    assert code_mod.task_tests(Task.create("?", ground_truth="42")) is None
    items = code_mod.split_tests("def check(f):\n    assert f(1) == 2", entry_point="inc")
    assert items is not None and items[-1] == ("test", "check(inc)")


# --- doctests ---------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [math_mod, code_mod, tool_call_mod, format_mod, text_mod])
def test_doctests(module: Any) -> None:
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
