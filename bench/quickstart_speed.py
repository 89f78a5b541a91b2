"""Seconds per batch of the quickstart's two kinds of calls, with the prefix cache off and on.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/quickstart_speed.py [--batch 16] [--rounds 1] [--greedy]

The prompts are the quickstart's (examples/quickstart.yaml): its system prompt, few-shot
exchange, calculator tool and sampling settings, on its first questions, each `n` (4) times
with seeds 0, 1, ... A round is one batch of forced first-step calls (tool_choice "required"),
then one batch of answer calls whose history holds the call each row made (with the cache off)
and the calculator's result, as the agent loop would build them. The cache-on mode starts
with an empty prefix cache, so its first batch pays for encoding the prefix; later rounds
(other questions) find it warm. A batch runs until its longest row ends, so sampled rows make
the two modes' figures differ by their longest completion too: `--greedy` (temperature 0)
gives both modes the same completions. Tokens/s counts the prompt and completion tokens the
backend reports, over wall-clock seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from agentmill.backends.base import Completion
from agentmill.backends.local import LocalBackend
from agentmill.config import LocalBackendConfig
from agentmill.configfile import load_config
from agentmill.records import Message, SamplingParams
from agentmill.rollout.protocol import parse_tool_calls
from agentmill.rollout.tools import Tool, ToolError, build_tools

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "quickstart.yaml"
DATA = ROOT / "examples" / "data" / "arithmetic.jsonl"

Batch = list[tuple[list[Message], SamplingParams]]


def first_steps(batch: int, round_: int, greedy: bool) -> Batch:
    """`batch` forced first-step requests: each question `n` times, seeds counting up."""
    cfg = load_config(CONFIG)
    head = [Message(role="system", content=cfg.rollout.system_prompt), *cfg.rollout.few_shot]
    n = cfg.rollout.n
    questions = [json.loads(line)["question"] for line in DATA.read_text().splitlines()]
    start = round_ * batch // n
    out: Batch = []
    for i in range(batch):
        q = questions[(start + i // n) % len(questions)]
        update: dict[str, Any] = {"seed": i, "tool_choice": "required"}
        if greedy:
            update["temperature"] = 0.0
        params = cfg.rollout.params.model_copy(update=update)
        out.append(([*head, Message(role="user", content=q)], params))
    return out


async def answer_steps(first: Batch, replies: list[Completion], tools: dict[str, Tool]) -> Batch:
    """The second-step requests: each first-step prompt, its call, and the tool's result."""
    out: Batch = []
    for (messages, params), reply in zip(first, replies, strict=True):
        calls = parse_tool_calls(reply.text).calls
        history = [*messages, Message(role="assistant", tool_calls=calls or None)]
        for c in calls:
            result = await _run(tools, c.function.name, c.function.arguments)
            history.append(
                Message(role="tool", tool_call_id=c.id, name=c.function.name, content=result)
            )
        out.append((history, params.model_copy(update={"tool_choice": "auto"})))
    return out


async def _run(tools: dict[str, Tool], name: str, arguments: dict[str, Any] | None) -> str:
    tool = tools.get(name)
    if tool is None or arguments is None:
        return "Error: malformed call."
    try:
        return await tool.call(arguments)
    except ToolError as e:
        return f"Error: {e}"


async def send(
    backend: LocalBackend, batch: Batch, schemas: list[dict[str, Any]]
) -> list[Completion]:
    """All of `batch` at once, so the backend runs it as one `generate`."""
    return list(await asyncio.gather(*[backend.complete(m, schemas, p) for m, p in batch]))


def timed(
    backend: LocalBackend, batch: Batch, schemas: list[dict[str, Any]]
) -> tuple[list[Completion], float]:
    start = time.perf_counter()
    replies = asyncio.run(send(backend, batch, schemas))
    return replies, time.perf_counter() - start


def report(label: str, replies: list[Completion], seconds: float) -> None:
    prompt = sum(c.usage.prompt_tokens for c in replies)
    completion = sum(c.usage.completion_tokens for c in replies)
    longest = max(c.usage.completion_tokens for c in replies)  # the batch runs until it ends
    print(
        f"  {label:<8} {seconds:6.2f} s/batch  prompt {prompt / len(replies):5.0f} tok/row  "
        f"completion {completion / len(replies):4.1f} tok/row (max {longest:2d})  "
        f"{(prompt + completion) / seconds:7.0f} tok/s all  {completion / seconds:5.1f} tok/s out"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--greedy", action="store_true", help="temperature 0 instead of 0.8")
    args = ap.parse_args()
    cfg = LocalBackendConfig(max_batch_size=args.batch, batch_wait_ms=50, threads=args.threads)
    backend = LocalBackend("bench", cfg)
    backend.load()
    engine = backend.engine
    tools = build_tools(load_config(CONFIG).rollout.tools)
    schemas = [t.schema() for t in tools.values()]
    for round_ in range(args.rounds):
        first = first_steps(args.batch, round_, args.greedy)
        answers: Batch | None = None
        for on in (False, True):
            engine.use_prefix_cache = on
            if on and round_ == 0 and engine.prefixes is not None:
                engine.prefixes.entries.clear()  # the first batch pays for the prefix
            print(f"round {round_ + 1}, prefix cache {'on' if on else 'off'}:")
            replies, seconds = timed(backend, first, schemas)
            report("forced", replies, seconds)
            if answers is None:  # both modes answer the same histories
                answers = asyncio.run(answer_steps(first, replies, tools))
            replies, seconds = timed(backend, answers, schemas)
            report("answer", replies, seconds)
    stats = backend.stats
    print(f"generate calls: {stats['generate_calls']}, largest batch {stats['max_batch']}")
    if engine.prefixes is not None:
        print(f"prefix cache: {engine.prefixes.stats}")


if __name__ == "__main__":
    main()
