import orjson
import pytest
from pydantic import ValidationError

from agentmill.records import (
    FunctionCall,
    Message,
    SamplingParams,
    Task,
    ToolCall,
    Trajectory,
    Usage,
)


def _traj() -> Trajectory:
    call = ToolCall(
        id="c1", function=FunctionCall(name="calculator", arguments={"expression": "2+2"})
    )
    bad = ToolCall(id="c2", function=FunctionCall.parse("calculator", '{"expression": "2+'))
    return Trajectory(
        id="t1",
        task_id="abc",
        sample_index=3,
        messages=[
            Message(role="system", content="sys"),
            Message(role="user", content=[{"type": "text", "text": "hi"}]),
            Message(
                role="assistant",
                content=None,
                tool_calls=[call, bad],
                reasoning="think",
                usage=Usage(prompt_tokens=5, completion_tokens=7),
            ),
            Message(role="tool", content="4", tool_call_id="c1", name="calculator"),
            Message(role="assistant", content="4"),
        ],
        final_answer="4",
        rewards={"math": 1.0},
        params=SamplingParams(temperature=0.0, seed=1),
        usage=Usage(prompt_tokens=5, completion_tokens=7),
    )


def test_trajectory_round_trip_is_exact() -> None:
    t = _traj()
    line = t.to_json()
    back = Trajectory.from_json(line)
    assert back == t
    assert back.to_json() == line
    assert b"\n" not in line


def test_unparseable_arguments_keep_raw_text() -> None:
    t = _traj()
    bad = t.messages[2].tool_calls[1].function
    assert bad.arguments is None and bad.raw_arguments == '{"expression": "2+'
    assert not bad.well_formed
    # the OpenAI form sends the raw text back unchanged, parsed dicts as JSON strings
    sent = t.messages[2].to_openai()["tool_calls"]
    assert sent[1]["function"]["arguments"] == '{"expression": "2+'
    assert orjson.loads(sent[0]["function"]["arguments"]) == {"expression": "2+2"}


@pytest.mark.parametrize(
    "raw, args, kept",
    [
        ('{"a": 1}', {"a": 1}, None),
        ({"a": 1}, {"a": 1}, None),
        ("", {}, None),
        (None, {}, None),
        ("[1, 2]", None, "[1, 2]"),
        ("not json", None, "not json"),
        ('"str"', None, '"str"'),
    ],
)
def test_function_call_parse(raw, args, kept) -> None:
    fc = FunctionCall.parse("f", raw)
    assert fc.arguments == args and fc.raw_arguments == kept


def test_task_id_is_content_hash() -> None:
    a = Task.create("What is 2+2?", ground_truth="4")
    b = Task.create("What is 2+2?", ground_truth="4", metadata={"x": 1})
    c = Task.create("What is 2+2?", ground_truth="5")
    assert a.id == b.id != c.id
    assert a.query == "What is 2+2?"
    assert Task.from_json(b.to_json()) == b


def test_unknown_keys_and_bad_roles_are_refused() -> None:
    with pytest.raises(ValidationError):
        Message.model_validate({"role": "robot", "content": "x"})
    with pytest.raises(ValidationError):
        Message.model_validate({"role": "user", "content": "x", "bogus": 1})


def test_text_of_parts_and_usage_sum() -> None:
    m = Message(
        role="user",
        content=[
            {"type": "text", "text": "a"},
            {"type": "image_url"},
            {"type": "text", "text": "b"},
        ],
    )
    assert m.text == "ab"
    u = Usage(prompt_tokens=1, completion_tokens=2) + Usage(prompt_tokens=3, completion_tokens=4)
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (4, 6, 10)
