"""Our rewards as TRL reward functions: `(prompts, completions, **kwargs) -> list[float | None]`.

Each completion (a string, or a list of message dicts for conversational prompts) becomes a
`Trajectory`, each row's columns a `Task` (`ground_truth`, `ground_truth_format`,
`expected_calls`, `ask_for`, as `agentmill.export.grpo` writes them), and the reward object
the score stage uses scores it, so the numbers are the same as in our pipeline. `None` (no
ground truth) tells TRL "no opinion". TRL logs each function under its `__name__`, the
reward's name.

    from agentmill.integrations.trl import math_reward_func, reward_func
    trainer = GRPOTrainer(..., reward_funcs=[math_reward_func, reward_func("format")])

>>> math_reward_func(["2+2?"], ["It is \\\\boxed{4}", "5"], ground_truth=["4", "4"])
[1.0, 0.0]
>>> reward_func({"type": "format", "require": ["boxed"]})(None, ["\\\\boxed{1}", "1"])
[1.0, 0.0]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from agentmill.records import ExpectedCall, FunctionCall, Message, Task, ToolCall, Trajectory
from agentmill.scoring import Reward, build_reward
from agentmill.scoring.configs import ScoreConfig

RewardFunc = Callable[..., list[float | None]]


def _tool_call(c: dict[str, Any], i: int) -> ToolCall:
    fn = c.get("function", c)
    call = FunctionCall.parse(fn.get("name", ""), fn.get("arguments"))
    return ToolCall(id=c.get("id") or f"call_{i}", function=call)


def message_from_dict(d: dict[str, Any]) -> Message:
    """A `Message` from an OpenAI / TRL message dict (arguments as dict or JSON text)."""
    calls = [_tool_call(c, i) for i, c in enumerate(d.get("tool_calls") or [])]
    return Message(
        role=d["role"],
        content=d.get("content"),
        name=d.get("name"),
        tool_call_id=d.get("tool_call_id"),
        tool_calls=calls or None,
        reasoning=d.get("reasoning_content") or d.get("reasoning"),
    )


def completion_trajectory(completion: str | list[dict[str, Any]], task_id: str = "") -> Trajectory:
    """The trajectory our rewards see for one completion."""
    if isinstance(completion, str):
        messages = [Message(role="assistant", content=completion)]
    else:
        messages = [message_from_dict(d) for d in completion]
    return Trajectory(id="completion", task_id=task_id, messages=messages)


def _decode(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value


def row_task(row: dict[str, Any]) -> Task:
    """The task of one dataset row, from the columns `to_grpo` writes."""
    truth = row.get("ground_truth")
    if row.get("ground_truth_format") == "json" and isinstance(truth, str):
        truth = orjson.loads(truth)
    expected = _decode(row.get("expected_calls"))
    ask_for = _decode(row.get("ask_for"))
    return Task(
        id=str(row.get("task_id") or ""),
        prompt=[],
        ground_truth=truth,
        expected_calls=None if expected is None else [ExpectedCall(**c) for c in expected],
        metadata={} if ask_for is None else {"ask_for": ask_for},
    )


def _rows(n: int, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    columns = {k: v for k, v in kwargs.items() if isinstance(v, list) and len(v) == n}
    return [{k: v[i] for k, v in columns.items()} for i in range(n)]


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to the end, also from inside a running event loop (in a thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _score_all(reward: Reward, pairs: list[tuple[Trajectory, Task]]) -> list[float | None]:
    values = await asyncio.gather(*(reward.score(t, task) for t, task in pairs))
    return [None if v is None else float(v) for v in values]


def _reward_config(name_or_config: Any) -> Any:
    return ScoreConfig(rewards=[name_or_config]).rewards[0]


def reward_func(name_or_config: str | dict[str, Any] | Any) -> RewardFunc:
    """A TRL reward function for one of our rewards, by type (`"math"`) or config
    (`{"type": "format", "require": ["boxed"]}` or a reward config object)."""
    reward = build_reward(_reward_config(name_or_config))

    def func(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float | None]:
        rows = _rows(len(completions), kwargs)
        trajectories = [completion_trajectory(c) for c in completions]
        pairs = [(t, row_task(r)) for t, r in zip(trajectories, rows, strict=True)]
        return run_sync(_score_all(reward, pairs))

    func.__name__ = func.__qualname__ = reward.name
    return func


def math_reward_func(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Our `math` reward against the `ground_truth` column."""
    return reward_func("math")(prompts, completions, **kwargs)


def format_reward_func(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float | None]:
    """Our `format` reward with its default checks (an answer, well-formed calls)."""
    return reward_func("format")(prompts, completions, **kwargs)


def tool_call_reward_func(
    prompts: Any, completions: list[Any], **kwargs: Any
) -> list[float | None]:
    """Our `tool_call` reward against the `expected_calls` / `ask_for` columns."""
    return reward_func("tool_call")(prompts, completions, **kwargs)


# --- our tools as the Python callables GRPOTrainer(tools=...) runs during generation ----------

_PY_TYPES: dict[str, type] = {
    "string": str,
    "number": float,
    "integer": int,
    "boolean": bool,
    "array": list,
    "object": dict,
}


def tool_callable(tool: Any) -> Callable[..., Coroutine[Any, Any, str]]:
    """One of our tools (`rollout.tools`) as an async Python function whose signature and
    docstring transformers' `get_json_schema` reads back as the tool's own schema (name,
    description, parameter types and descriptions, required, enums), so TRL renders the tool
    block our rollouts and evals use; what a docstring cannot say (defaults, bounds such as
    `minimum`, `additionalProperties`) is left out of the rendered schema, not of the tool.
    Called with the parsed arguments, it returns the observation our agent loop shows: the
    result, or `Error: ...` for a problem the model should see.

    >>> import asyncio
    >>> from agentmill.rollout.tools import build_tools
    >>> from agentmill.rollout.configs import CalculatorToolConfig
    >>> calc = tool_callable(build_tools([CalculatorToolConfig()])["calculator"])
    >>> calc.__name__, asyncio.run(calc(expression="6 * 7"))
    ('calculator', '42')
    >>> asyncio.run(calc(expression="6 *"))[:6]
    'Error:'
    """
    import inspect

    from agentmill.rollout.tools import ToolError

    fn = tool.schema()["function"]
    params = fn.get("parameters") or {}
    props: dict[str, Any] = params.get("properties") or {}
    required = set(params.get("required") or [])

    async def call(**arguments: Any) -> str:
        try:
            return await tool.call(arguments)
        except ToolError as e:
            return f"Error: {e}"
        except Exception as e:  # noqa: BLE001 - the agent loop shows any failure the same way
            return f"Error: {type(e).__name__}: {e}"

    signature, annotations, lines = [], {}, []
    for name, spec in sorted(props.items(), key=lambda kv: kv[0] not in required):
        kind = _PY_TYPES.get(spec.get("type", "string"), str)
        annotations[name] = kind
        default = inspect.Parameter.empty if name in required else spec.get("default")
        signature.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotations[name]
            )
        )
        text = " ".join(str(spec.get("description") or name).split())
        if spec.get("enum"):
            text += f" (choices: {orjson.dumps(spec['enum']).decode()})"
        lines.append(f"    {name}: {text}")
    description = " ".join(str(fn.get("description") or fn["name"]).split())
    call.__doc__ = description + ("\n\nArgs:\n" + "\n".join(lines) if lines else "")
    call.__name__ = call.__qualname__ = fn["name"]
    call.__annotations__ = annotations
    call.__signature__ = inspect.Signature(signature)  # type: ignore[attr-defined]
    return call
