"""Regenerate examples/data/studio_calc.sqlite, the AgentScope Studio file that the
Studio -> trained-model example (examples/flywheel/studio_loop.yaml) starts from: 24 runs of a
math help-desk agent with a `calculator` tool (agentscope 1.0.9+ GenAI spans, Studio >= 1.0.7
layout), written by tests/studio_db.py the way Studio's span processor fills the file. Most
runs call the calculator and answer with the number; some excuse themselves, answer off topic
or give a wrong number: what the judge is there to drop.

    .venv/bin/python examples/data/make_studio_calc.py
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

sys.path.insert(0, str(HERE))

from make_studio_feedback import write  # noqa: E402
from studio_db import Call, RunScript, Step, Turn  # noqa: E402

SYSTEM = "You are the math help desk. Use the calculator for arithmetic and reply with the number."
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
NAMES = ["Rosa", "Ken", "Mia", "Leo", "Zoe", "Ari", "Noa", "Eli"]
THINGS = ["tickets", "crayons", "plums", "badges", "shirts", "candles"]


def problem(rng: random.Random) -> tuple[str, str, int]:
    """A word problem, the expression it needs, and its answer."""
    n, t = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(110, 880), rng.randint(20, 99)
    kind = rng.randrange(4)
    if kind == 0:
        return f"{n} has {a} {t} and gets {b} more. How many {t} now?", f"{a} + {b}", a + b
    if kind == 1:
        return f"{n} had {a} {t} and sold {b}. How many {t} are left?", f"{a} - {b}", a - b
    a = rng.randint(11, 39)
    if kind == 2:
        q = f"{n} packs {a} boxes with {b} {t} in each. How many {t} in total?"
        return q, f"{a} * {b}", a * b
    return f"{a * b} {t} are shared equally by {a} people. How many each?", f"{a * b} / {a}", b


def runs() -> list[RunScript]:
    rng = random.Random(11)
    start = datetime(2026, 5, 4, 9, 0, 0, tzinfo=UTC)
    out: list[RunScript] = []
    for i in range(24):
        q, expr, answer = problem(rng)
        call = Call("calculator", {"expression": expr}, str(answer))
        if i % 6 == 5:  # a bad answer: an excuse, or a wrong number, for the judge to catch
            steps = [Step("Sorry, I cannot do calculations right now. Please try a calculator.")]
            if i % 12 == 11:
                steps = [Step("", [call]), Step(str(answer + 10), usage=(260, 3))]
        else:
            steps = [Step("", [call]), Step(str(answer), usage=(260, 3))]
        out.append(
            RunScript(
                f"run-{i:02d}",
                [Turn(user=q, steps=steps)],
                project="helpdesk",
                name="math-desk",
                start=start + timedelta(minutes=7 * i),
                system=SYSTEM,
                tools=[CALCULATOR],
            )
        )
    return out


def main(path: Path = HERE / "studio_calc.sqlite") -> Path:
    return write(path, runs())


if __name__ == "__main__":
    print(main())
