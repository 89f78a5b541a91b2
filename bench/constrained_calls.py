"""Well-formed tool calls of the embedded model: tool_choice "auto" vs "required" (constrained).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/constrained_calls.py [--n 100] [--seed 0]
        [--max-tokens 64] [--few-shot]

`--n` seeded questions "What is A op B?" go to the embedded model (SmolLM2-135M) through
LocalBackend at temperature 0, with one calculator tool and a small system prompt holding a
worked example (`--few-shot` adds one worked exchange as earlier turns). Each reply is read
with `parse_tool_calls`; a reply is a well-formed call when it holds exactly one call, to
`calculator`, whose arguments are an object with an "expression" string. Also counted: a
non-empty expression, and an expression that evaluates to the right answer.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import operator
import random
import time
from collections.abc import Callable

from agentmill.backends.base import Completion
from agentmill.backends.local import LocalBackend
from agentmill.config import LocalBackendConfig
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall
from agentmill.rollout.protocol import parse_tool_calls

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
SYSTEM = (
    "You are a careful assistant. Use the calculator tool for arithmetic.\n"
    'Example: for "What is 12 * 7?" you write:\n<tool_call>\n'
    '{"name": "calculator", "arguments": {"expression": "12 * 7"}}\n</tool_call>'
)
OPS: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
}
AST_OPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
}


def questions(n: int, seed: int) -> list[tuple[str, float]]:
    """`n` questions with their answers, the same for the same seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b, op = rng.randint(2, 99), rng.randint(2, 99), rng.choice(list(OPS))
        out.append((f"What is {a} {op} {b}?", OPS[op](a, b)))
    return out


def prefix(few_shot: bool) -> list[Message]:
    """The system prompt, and with `few_shot` one worked exchange."""
    messages = [Message(role="system", content=SYSTEM)]
    if few_shot:
        call = FunctionCall(name="calculator", arguments={"expression": "12 * 7"})
        messages += [
            Message(role="user", content="What is 12 * 7?"),
            Message(role="assistant", tool_calls=[ToolCall(id="c0", function=call)]),
            Message(role="tool", tool_call_id="c0", content="84"),
            Message(role="assistant", content="12 * 7 = 84."),
        ]
    return messages


def evaluate(expression: str) -> float | None:
    """The value of a + - * / expression over numbers, or None."""

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in AST_OPS:
            return AST_OPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        raise ValueError("unsupported expression")

    try:
        return ev(ast.parse(expression.strip(), mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError):
        return None


def score(completion: Completion, answer: float) -> dict[str, bool]:
    """Whether the reply is one well-formed calculator call, non-empty, and right."""
    calls = parse_tool_calls(completion.text).calls
    fn = calls[0].function if len(calls) == 1 else None
    args = fn.arguments if fn is not None and fn.name == "calculator" else None
    expr = (args or {}).get("expression")
    value = evaluate(expr) if isinstance(expr, str) else None
    return {
        "well_formed": isinstance(expr, str),
        "non_empty": isinstance(expr, str) and bool(expr.strip()),
        "correct": value is not None and abs(value - answer) < 1e-6,
    }


async def run(
    backend: LocalBackend, convs: list[list[Message]], params: SamplingParams
) -> list[Completion]:
    return await asyncio.gather(*[backend.complete(m, [CALCULATOR], params) for m in convs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--few-shot", action="store_true")
    args = ap.parse_args()
    backend = LocalBackend("local", LocalBackendConfig(model="smollm2-135m"))
    backend.load()
    qa = questions(args.n, args.seed)
    convs = [[*prefix(args.few_shot), Message(role="user", content=q)] for q, _ in qa]
    prompt = "system prompt + one worked exchange" if args.few_shot else "system prompt"
    print(f"{args.n} questions, seed {args.seed}, max_tokens {args.max_tokens}, {prompt}")
    for choice in ("auto", "required"):
        params = SamplingParams(temperature=0, max_tokens=args.max_tokens, tool_choice=choice)
        start = time.perf_counter()
        done = asyncio.run(run(backend, convs, params))
        seconds = time.perf_counter() - start
        scores = [score(c, a) for c, (_, a) in zip(done, qa, strict=True)]
        counts = {k: sum(s[k] for s in scores) for k in ("well_formed", "non_empty", "correct")}
        figures = ", ".join(f"{k} {v}/{args.n}" for k, v in counts.items())
        print(f"tool_choice={choice:9s} {figures}  ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
