"""Write the measured flywheel's task files (deterministic; re-running rewrites the same bytes).

    python scripts/make_flywheel_tasks.py [--out examples/flywheel]

Three kinds of task (`kind`), each with `expected_calls` (what is right), a numeric `answer`
and the `template` it was drawn from (`mul-bags`, `read-age`, `fact`, ...; the sampling run
balances its kept data over them):

- `one-call`: a word problem that needs one calculator call (+, -, *, /; numbers too large
  to do in one's head);
- `two-call`: a word problem that needs two operations (a call each, or one call with the
  whole expression);
- `no-tool`: a question that needs no tool: a common fact ("How many legs does a spider
  have?"), or a number to read off the question ("... How old is Ben?", "It is 23 degrees
  and sunny. What is the temperature?", which tempts the distractor `get_weather`).

The held-out file and the training file are drawn from separate random streams; the fact
questions are split between them (no fact appears in both) and a held-out problem's exact
text never appears in the training file.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

NAMES = "Ada Ben Cleo Dan Eva Finn Gia Hal Ivy Jon Kai Lea Max Nia Omar Pia Raj Sam Tia Uma"
NAMES_LIST = NAMES.split()
THINGS = "apples stamps cards shells marbles stickers pencils books coins beads buttons cookies"
THINGS_LIST = THINGS.split()

FACTS: list[tuple[str, int]] = [
    ("How many days are in a week?", 7),
    ("How many months are in a year?", 12),
    ("How many hours are in a day?", 24),
    ("How many minutes are in an hour?", 60),
    ("How many seconds are in a minute?", 60),
    ("How many legs does a spider have?", 8),
    ("How many legs does a dog have?", 4),
    ("How many legs does an insect have?", 6),
    ("How many sides does a triangle have?", 3),
    ("How many sides does a square have?", 4),
    ("How many sides does a hexagon have?", 6),
    ("How many sides does an octagon have?", 8),
    ("How many wheels does a bicycle have?", 2),
    ("How many wheels does a tricycle have?", 3),
    ("How many cents are in a dollar?", 100),
    ("How many days are in a year that is not a leap year?", 365),
    ("How many continents are there on Earth?", 7),
    ("How many planets are in our solar system?", 8),
    ("How many letters are in the English alphabet?", 26),
    ("How many days are in the month of January?", 31),
    ("How many days are in the month of April?", 30),
    ("How many players are on a soccer team on the field?", 11),
    ("How many strings does a standard guitar have?", 6),
    ("How many eyes does a person have?", 2),
    ("How many fingers are on one hand?", 5),
    ("How many toes does a person have in total?", 10),
    ("How many legs does a bird have?", 2),
    ("How many legs does a cat have?", 4),
    ("How many wings does a bird have?", 2),
    ("How many arms does an octopus have?", 8),
    ("How many items are in a dozen?", 12),
    ("How many years are in a century?", 100),
    ("How many years are in a decade?", 10),
    ("How many weeks are in a year?", 52),
    ("How many colors are in a rainbow?", 7),
    ("How many notes are in a musical octave scale, do re mi fa sol la ti?", 7),
    ("How many sides does a pentagon have?", 5),
    ("How many corners does a cube have?", 8),
    ("How many faces does a cube have?", 6),
    ("How many hearts does a person have?", 1),
    ("How many noses does a person have?", 1),
    ("How many seasons are in a year?", 4),
    ("How many days are in a weekend?", 2),
    ("How many sides does a rectangle have?", 4),
    ("How many wheels does a car have?", 4),
    ("How many horns does a unicorn have?", 1),
    ("How many grams are in a kilogram?", 1000),
    ("How many centimeters are in a meter?", 100),
    ("How many meters are in a kilometer?", 1000),
    ("How many milliliters are in a liter?", 1000),
    ("How many minutes are in half an hour?", 30),
    ("How many hours are in half a day?", 12),
    ("How many suns are in our solar system?", 1),
    ("How many moons does the Earth have?", 1),
    ("How many legs does a horse have?", 4),
    ("How many legs does a chicken have?", 2),
    ("How many legs does an ant have?", 6),
    ("How many wheels does a unicycle have?", 1),
]

# Facts only the training file holds (appended after the split above, so the held-out file
# keeps its 30 facts byte for byte): with 28 training facts, a 135M teacher verified 2 or 3
# per round, too few for the student to learn that a fact needs no tool.
TRAIN_ONLY_FACTS: list[tuple[str, int]] = [
    ("How many legs does a cow have?", 4),
    ("How many legs does a sheep have?", 4),
    ("How many legs does a duck have?", 2),
    ("How many legs does a pig have?", 4),
    ("How many legs does a goat have?", 4),
    ("How many legs does an elephant have?", 4),
    ("How many legs does a frog have?", 4),
    ("How many legs does a person have?", 2),
    ("How many arms does a person have?", 2),
    ("How many ears does a person have?", 2),
    ("How many thumbs are on one hand?", 1),
    ("How many mouths does a person have?", 1),
    ("How many heads does a person have?", 1),
    ("How many wheels does a motorcycle have?", 2),
    ("How many wheels does a skateboard have?", 4),
    ("How many days are in the month of December?", 31),
    ("How many days are in the month of June?", 30),
    ("How many days are in the month of March?", 31),
    ("How many days are in a leap year?", 366),
    ("How many zeros are in one hundred?", 2),
    ("How many zeros are in one thousand?", 3),
    ("How many cents are in a quarter?", 25),
    ("How many cents are in a dime?", 10),
    ("How many cents are in a nickel?", 5),
    ("How many sides does a stop sign have?", 8),
    ("How many strings does a violin have?", 4),
    ("How many keys are on a standard piano?", 88),
    ("How many players are on a basketball team on the court?", 5),
    ("How many squares are on a chess board?", 64),
    ("How many pieces does each player start with in chess?", 16),
    ("How many cards are in a standard deck?", 52),
    ("How many faces does a standard die have?", 6),
    ("How many inches are in a foot?", 12),
    ("How many feet are in a yard?", 3),
    ("How many ounces are in a pound?", 16),
    ("How many millimeters are in a centimeter?", 10),
    ("How many seconds are in an hour?", 3600),
    ("How many degrees are in a right angle?", 90),
    ("How many degrees are in a full circle?", 360),
    ("How many sides does a heptagon have?", 7),
    ("How many sides does a decagon have?", 10),
    ("How many vowels are in the English alphabet?", 5),
    ("How many oceans are there on Earth?", 5),
    ("How many teeth does an adult person usually have?", 32),
    ("How many bones are in the adult human body?", 206),
    ("How many years are in a millennium?", 1000),
    ("How many wings does a butterfly have?", 4),
    ("How many arms does a starfish usually have?", 5),
    ("How many humps does a dromedary camel have?", 1),
    ("How many days are in the month of February in a leap year?", 29),
]

# The template of each kind of problem (the task's `template` field; the sampling run balances
# its kept data over them).
ONE_CALL = [
    "add-finds",
    "add-boxes",
    "sub-gave",
    "sub-lost",
    "mul-bags",
    "mul-rows",
    "div-share",
    "div-pack",
]
TWO_CALL = ["mul-sub-packs", "add-div-share", "mul-sub-change", "add-sub-lose"]
READ_OFF = ["read-age", "read-color", "read-weather", "read-house"]

CALC = [{"name": "calculator"}]
CALC2 = [{"name": "calculator", "step": 0}, {"name": "calculator", "step": 1}]


def one_call(rng: random.Random) -> tuple[str, int, str]:
    n, t = rng.choice(NAMES_LIST), rng.choice(THINGS_LIST)
    kind = rng.randrange(8)
    if kind == 0:
        a, b = rng.randint(120, 899), rng.randint(40, 499)
        return (
            f"{n} has {a} {t} and finds {b} more. How many {t} does {n} have now?",
            a + b,
            ONE_CALL[kind],
        )
    if kind == 1:
        a, b = rng.randint(120, 899), rng.randint(120, 899)
        q = f"One box holds {a} {t} and another holds {b} {t}. How many {t} are there in all?"
        return q, a + b, ONE_CALL[kind]
    if kind == 2:
        a = rng.randint(300, 999)
        b = rng.randint(40, a - 50)
        return f"{n} had {a} {t} and gave away {b}. How many {t} are left?", a - b, ONE_CALL[kind]
    if kind == 3:
        a = rng.randint(300, 999)
        b = rng.randint(40, a - 50)
        return (
            f"{n} had {a} {t} and lost {b} of them. How many {t} does {n} have now?",
            a - b,
            ONE_CALL[kind],
        )
    if kind == 4:
        a, b = rng.randint(12, 48), rng.randint(12, 39)
        return (
            f"{n} fills {a} bags with {b} {t} in each bag. How many {t} is that in total?",
            a * b,
            ONE_CALL[kind],
        )
    if kind == 5:
        a, b = rng.randint(12, 48), rng.randint(12, 39)
        return (
            f"There are {a} rows of {t} with {b} {t} in each row. How many {t} are there?",
            a * b,
            ONE_CALL[kind],
        )
    if kind == 6:
        each, k = rng.randint(12, 48), rng.randint(3, 19)
        q = f"{n} shares {each * k} {t} equally among {k} friends. "
        q += f"How many {t} does each friend get?"
        return q, each, ONE_CALL[kind]
    per, boxes = rng.randint(6, 24), rng.randint(12, 48)
    q = f"{per * boxes} {t} are packed {per} to a box. How many boxes are filled?"
    return q, boxes, ONE_CALL[kind]


def two_call(rng: random.Random) -> tuple[str, int, str]:
    n, t = rng.choice(NAMES_LIST), rng.choice(THINGS_LIST)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(6, 24), rng.randint(12, 36)
        c = rng.randint(10, a * b - 10)
        q = f"{n} buys {a} packs of {b} {t} and then gives away {c}. "
        q += f"How many {t} does {n} have left?"
        return q, a * b - c, TWO_CALL[kind]
    if kind == 1:
        k = rng.randint(3, 12)
        total = k * rng.randint(15, 60)
        a = rng.randint(total // 3, total - 10)
        q = (
            f"{n} has {a} {t} and gets {total - a} more, then shares them equally among "
            f"{k} friends. How many {t} does each friend get?"
        )
        return q, total // k, TWO_CALL[kind]
    if kind == 2:
        price, count = rng.randint(3, 19), rng.randint(4, 12)
        bill = rng.choice([100, 200, 500])
        q = (
            f"A shop sells {t} at {price} dollars each. {n} buys {count} of them and pays "
            f"with a {bill} dollar note. How many dollars of change does {n} get?"
        )
        return q, bill - price * count, TWO_CALL[kind]
    a, b, c = rng.randint(120, 599), rng.randint(120, 599), rng.randint(40, 200)
    q = (
        f"{n} has {a} {t} and {rng.choice(NAMES_LIST)} has {b}. They lose {c} together. "
        f"How many {t} do they have left?"
    )
    return q, a + b - c, TWO_CALL[kind]


def read_off(rng: random.Random) -> tuple[str, int, str]:
    n, m, t = *rng.sample(NAMES_LIST, 2), rng.choice(THINGS_LIST)
    kind = rng.randrange(4)
    if kind == 0:
        a, b = rng.randint(6, 80), rng.randint(6, 80)
        return f"{n} is {a} years old and {m} is {b} years old. How old is {m}?", b, READ_OFF[kind]
    if kind == 1:
        a, b = rng.randint(10, 500), rng.randint(10, 500)
        return (
            f"{n} has {a} red {t} and {b} blue {t}. How many blue {t} does {n} have?",
            b,
            READ_OFF[kind],
        )
    if kind == 2:
        deg = rng.randint(-5, 35)
        sky = rng.choice(["sunny", "cloudy", "rainy", "windy"])
        q = f"The weather report says it is {deg} degrees and {sky} today. "
        q += "What is the temperature in degrees?"
        return q, deg, READ_OFF[kind]
    a = rng.randint(100, 999)
    return f"{n} lives at number {a} on Elm Street. What is the house number?", a, READ_OFF[kind]


def _rows(
    rng: random.Random, counts: dict[str, int], facts: list[tuple[str, int]], prefix: str
) -> list[dict[str, object]]:
    makers: dict[
        str, tuple[Callable[[random.Random], tuple[str, int, str]], list[dict[str, object]]]
    ]
    makers = {"one-call": (one_call, CALC), "two-call": (two_call, CALC2)}
    rows: list[dict[str, object]] = []
    seen: set[str] = set()

    def add(kind: str, q: str, a: int, template: str, expected: list[dict[str, object]]) -> None:
        if q in seen:
            return
        seen.add(q)
        row = {"id": f"{prefix}-{len(rows):04d}", "kind": kind, "template": template}
        rows.append(row | {"question": q, "answer": str(a), "expected_calls": expected})

    for kind, (make, expected) in makers.items():
        while sum(r["kind"] == kind for r in rows) < counts[kind]:
            add(kind, *make(rng), expected)
    for q, a in facts:
        add("no-tool", q, a, "fact", [])
    while sum(r["kind"] == "no-tool" for r in rows) < counts["no-tool"]:
        add("no-tool", *read_off(rng), [])
    rng.shuffle(rows)
    return rows


# What calc_sample.yaml samples (`limit: 200`) comes first in the training file: every
# training fact and red-and-blue count, which the 135M teacher and a round-1 student rarely get
# right (in the file's plain random order, 2-6 of 41 facts and 0-3 of 14 counts were verified
# per round, and a round whose data held 2 distinct facts left the student calling on 21 of the
# 30 held-out facts), then word problems and the easy read-offs, by quota (per kind or template).
SAMPLED_QUOTA = {"one-call": 52, "two-call": 25, "read-age": 6, "read-house": 6, "read-weather": 6}
SAMPLED_ALL = ("fact", "read-color")


def sampled_first(rows: list[dict[str, object]], rng: random.Random) -> list[dict[str, object]]:
    """`rows` with the block that the sampling run takes first (shuffled), the rest after."""
    first = [r for r in rows if r["template"] in SAMPLED_ALL]
    for key, n in SAMPLED_QUOTA.items():
        first += [r for r in rows if key in (r["kind"], r["template"])][:n]
    chosen = {id(r) for r in first}
    rng.shuffle(first)
    return first + [r for r in rows if id(r) not in chosen]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("examples/flywheel"))
    args = ap.parse_args()
    facts = FACTS[:]
    random.Random(7).shuffle(facts)
    held_facts, train_facts = facts[:30], facts[30:] + TRAIN_ONLY_FACTS
    held = _rows(
        random.Random(1),
        {"one-call": 110, "two-call": 50, "no-tool": 80},
        held_facts,
        "held",
    )
    held_q = {r["question"] for r in held}
    train = [
        r
        for r in _rows(
            random.Random(2),
            {"one-call": 160, "two-call": 60, "no-tool": 180},
            train_facts,
            "train",
        )
        if r["question"] not in held_q
    ]
    train = sampled_first(train, random.Random(3))
    for name, rows in (("calc_held_out.jsonl", held), ("calc_train.jsonl", train)):
        with open(args.out / name, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        kinds = {k: sum(r["kind"] == k for r in rows) for k in ("one-call", "two-call", "no-tool")}
        print(f"{args.out / name}: {len(rows)} tasks {kinds}")


if __name__ == "__main__":
    main()
