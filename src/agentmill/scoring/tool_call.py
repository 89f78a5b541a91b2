"""Tool-call reward: did the agent make the calls the task expects, with the right arguments,
in an order the calls' dependencies allow?

The score is an F1 over calls in which each matched call counts by its argument match::

    score = 2 * sum(w) / (made + expected)

where `made` counts every call the agent made (malformed ones included), `expected` every
expected call, and `w` (0..1) is, for each matched pair, the fraction of the expected call's
argument keys whose values match. It is the harmonic mean of precision `sum(w) / made` and
recall `sum(w) / expected`, so a missing call and an extra call cost alike.

Matching pairs a made call with an expected call of the same name; a malformed call (its
arguments did not parse) matches nothing. Expected calls with the same `step` may be matched
in any order (parallel calls); a higher step must come after every lower one (it needs their
results). `order_sensitive=True` also holds calls of one step to their listed order. The
matching is the one with the largest `sum(w)` among those respecting the order (a step of
more than `MAX_GROUP` parallel calls is matched in its listed order, to bound the search).

Values match after normalizing: numbers by value (`2 == 2.0 == "2"`), strings ignoring case
and surrounding or repeated whitespace, lists item by item, dicts key by key. Arguments the
agent added beyond the expected keys are not penalized.

`expected=None` means the task has no opinion: None. `expected=[]` means no call is right:
1.0 when none was made, else 0.0; with `ask_for` (argument names the user left out) the
final text must also ask for one: contain a `?` and mention one of the names. A name is
mentioned when its words appear (`departure_date` as "departure date"), or any one of its
words of four letters or more ("date"); an `ask_for` item may list synonyms as `a|b|c`.

>>> from agentmill.records import ExpectedCall
>>> exp = [ExpectedCall(name="weather", arguments={"city": "Paris"})]
>>> tool_call_score([("weather", {"city": "paris "})], exp)
1.0
>>> tool_call_score([("weather", {"city": "Rome"})], exp)  # right tool, wrong city
0.0
>>> tool_call_score([("weather", {"city": "Paris"}), ("weather", {"city": "Rome"})], exp)
0.6666666666666666
>>> tool_call_score([], [], ask_for=["city"], final_text="Which city do you mean?")
1.0
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from agentmill.records import ExpectedCall, Task, Trajectory
from agentmill.scoring.configs import ToolCallRewardConfig
from agentmill.scoring.text import final_text as answer_text

Call = tuple[str, dict[str, Any] | None]
# (total argument match, number of pairs, pairs as (made index, expected index))
_Best = tuple[float, int, tuple[tuple[int, int], ...]]
_State = tuple[int, frozenset[int]]  # (group reached, its expected calls already matched)
MAX_GROUP = 8  # parallel calls of one step searched in any order; more: in listed order


@dataclass(frozen=True)
class ToolCallBreakdown:
    """The parts of a tool-call score.

    `name_accuracy`: matched expected calls (right name, allowed order) / expected calls.
    `argument_match`: mean argument match over the matched pairs (0.0 when none matched).
    `order_ok`: no better matching exists when order is ignored (nothing was lost to order);
    not checked (True) past `MAX_GROUP` expected calls.
    """

    score: float
    name_accuracy: float
    argument_match: float
    order_ok: bool
    made: int
    expected: int
    matched: int
    malformed: int
    pairs: tuple[tuple[int, int], ...] = ()


def tool_call_score(
    calls: list[Call],
    expected: list[ExpectedCall] | None,
    *,
    order_sensitive: bool = False,
    ask_for: list[str] | None = None,
    final_text: str = "",
) -> float | None:
    """The reward for the calls made (name, arguments or None when malformed), in order.
    See the module docstring for the formula.

    >>> from agentmill.records import ExpectedCall
    >>> tool_call_score([("search", {"q": "x"})], None) is None
    True
    >>> tool_call_score([("search", {"q": "x"})], [])
    0.0
    """
    if expected is None:
        return None
    if not expected:
        return _no_call_score(calls, ask_for, final_text)
    return tool_call_breakdown(calls, expected, order_sensitive=order_sensitive).score


def _no_call_score(calls: list[Call], ask_for: list[str] | None, text: str) -> float:
    if calls:
        return 0.0
    if not ask_for:
        return 1.0
    return float(asks_for(text, ask_for))


def asks_for(text: str, names: list[str]) -> bool:
    """True when `text` asks a question mentioning one of the argument `names`.

    >>> asks_for("What is your departure date?", ["departure_date"])
    True
    >>> asks_for("Please tell me the date.", ["departure_date"])  # no question mark
    False
    >>> asks_for("Where to?", ["city|destination|where"])
    True
    """
    if "?" not in text:
        return False
    words = set(re.findall(r"[a-z0-9]+", text.casefold()))
    spaced = " ".join(re.findall(r"[a-z0-9]+", text.casefold()))
    return any(_mentioned(alt, words, spaced) for name in names for alt in name.split("|"))


def _mentioned(name: str, words: set[str], spaced: str) -> bool:
    # camelCase and snake_case both become separate words
    parts = re.findall(r"[a-z0-9]+", re.sub(r"([a-z])([A-Z])", r"\1 \2", name).casefold())
    if not parts:
        return False
    if f" {' '.join(parts)} " in f" {spaced} ":
        return True
    return any(len(p) >= 4 and p in words for p in parts)


def tool_call_breakdown(
    calls: list[Call], expected: list[ExpectedCall], *, order_sensitive: bool = False
) -> ToolCallBreakdown:
    """Score and components for a non-empty `expected`.

    >>> from agentmill.records import ExpectedCall
    >>> exp = [ExpectedCall(name="a", step=0), ExpectedCall(name="b", step=1)]
    >>> b = tool_call_breakdown([("b", {}), ("a", {})], exp)  # b needs a's result
    >>> (b.score, b.name_accuracy, b.order_ok)
    (0.5, 0.5, False)
    """
    weights = _weights(calls, expected)
    groups = _groups(expected, order_sensitive)
    total, matched, pairs = _best_matching(weights, groups)
    order_ok = True
    if len(groups) > 1 and len(expected) <= MAX_GROUP:  # else nothing is ordered, or too big
        free_total, free_matched, _ = _best_matching(weights, [tuple(range(len(expected)))])
        order_ok = math.isclose(total, free_total) and matched == free_matched
    w = [weights[i][j] or 0.0 for i, j in pairs]
    return ToolCallBreakdown(
        score=2 * total / (len(calls) + len(expected)),
        name_accuracy=matched / len(expected),
        argument_match=sum(w) / len(w) if w else 0.0,
        order_ok=order_ok,
        made=len(calls),
        expected=len(expected),
        matched=matched,
        malformed=sum(args is None for _, args in calls),
        pairs=pairs,
    )


def _weights(calls: list[Call], expected: list[ExpectedCall]) -> list[list[float | None]]:
    """weights[i][j]: argument match of made call i for expected call j; None: cannot pair."""
    return [
        [
            argument_match(e.arguments, args) if name == e.name and args is not None else None
            for e in expected
        ]
        for name, args in calls
    ]


def _groups(expected: list[ExpectedCall], order_sensitive: bool) -> list[tuple[int, ...]]:
    """Expected call indices in the order they must be made; any order inside a group."""
    steps = sorted({e.step for e in expected})
    groups = [tuple(j for j, e in enumerate(expected) if e.step == s) for s in steps]
    # the search keeps a subset of each group: huge groups fall back to their listed order
    return [(j,) for g in groups for j in g] if order_sensitive else _split_huge(groups)


def _split_huge(groups: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    return [part for g in groups for part in ([g] if len(g) <= MAX_GROUP else [(j,) for j in g])]


def _best_matching(weights: list[list[float | None]], groups: list[tuple[int, ...]]) -> _Best:
    """The order-respecting matching with the largest total weight, then the most pairs.

    A walk over the made calls in order, keeping the best matching for each state: the group
    reached so far and which of its calls are matched (groups are small, so states are few).
    Moving on to a later group gives up the unmatched calls of the earlier ones.
    """
    states: dict[_State, _Best] = {(0, frozenset()): (0.0, 0, ())}
    for i, row in enumerate(weights):
        after = dict(states)  # made call i left unmatched
        for state, best in states.items():
            for key, candidate in _moves(i, row, state, best, groups):
                if key not in after or _rank(candidate) > _rank(after[key]):
                    after[key] = candidate
        states = after
    return max(states.values(), key=_rank)


def _moves(
    i: int, row: list[float | None], state: _State, best: _Best, groups: list[tuple[int, ...]]
) -> Iterator[tuple[_State, _Best]]:
    """Every way to pair made call `i` with an expected call the order still allows."""
    g, used = state
    total, count, pairs = best
    for g2 in range(g, len(groups)):
        for j in groups[g2]:
            w = row[j]
            if w is None or (g2 == g and j in used):
                continue
            key = (g2, (used if g2 == g else frozenset()) | {j})
            yield key, (total + w, count + 1, (*pairs, (i, j)))


def _rank(best: _Best) -> tuple[float, int]:
    return (round(best[0], 9), best[1])


def argument_match(expected: dict[str, Any], made: dict[str, Any]) -> float:
    """The fraction of expected keys whose values match (1.0 when none are expected).

    >>> argument_match({"n": 2, "unit": "Celsius"}, {"n": "2.0", "unit": " celsius"})
    1.0
    >>> argument_match({"a": 1, "b": 2}, {"a": 1})
    0.5
    """
    if not expected:
        return 1.0
    hits = sum(k in made and values_match(v, made[k]) for k, v in expected.items())
    return hits / len(expected)


def values_match(expected: Any, made: Any) -> bool:
    """Equal after normalizing numbers, strings, lists and dicts.

    >>> values_match(2, "2.0"), values_match("New  York", "new york"), values_match(True, 1)
    (True, True, False)
    """
    if isinstance(expected, bool) or isinstance(made, bool):
        return _as_bool(expected) is not None and _as_bool(expected) == _as_bool(made)
    a, b = _as_number(expected), _as_number(made)
    if a is not None and b is not None:
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(expected, str) and isinstance(made, str):
        return " ".join(expected.split()).casefold() == " ".join(made.split()).casefold()
    if isinstance(expected, Sequence) and isinstance(made, Sequence):
        if isinstance(expected, str) or isinstance(made, str) or len(expected) != len(made):
            return False
        return all(values_match(x, y) for x, y in zip(expected, made, strict=True))
    if isinstance(expected, dict) and isinstance(made, dict):
        keys_equal = set(expected) == set(made)
        return keys_equal and all(values_match(v, made[k]) for k, v in expected.items())
    return expected == made


def _as_number(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            return None
    return None


def _as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().casefold() in ("true", "false"):
        return v.strip().casefold() == "true"
    return None


def made_calls(trajectory: Trajectory) -> list[Call]:
    """Every assistant tool call in the trajectory, in order, as (name, arguments or None)."""
    return [
        (c.function.name, c.function.arguments)
        for m in trajectory.messages
        if m.role == "assistant"
        for c in m.tool_calls or []
    ]


class ToolCallReward:
    """`tool_call_score` of a trajectory's calls against `task.expected_calls`, with
    `task.metadata["ask_for"]` (a name or a list of names) for tasks missing an argument.

    >>> import asyncio
    >>> from agentmill.records import Message
    >>> task = Task.create("Hi!", expected_calls=[])
    >>> t = Trajectory(id="t", task_id=task.id, messages=[Message(role="assistant", content="Hi")])
    >>> asyncio.run(ToolCallReward(ToolCallRewardConfig()).score(t, task))
    1.0
    """

    def __init__(self, cfg: ToolCallRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        if task is None:
            return None
        ask_for = task.metadata.get("ask_for")
        return tool_call_score(
            made_calls(trajectory),
            task.expected_calls,
            order_sensitive=self.cfg.order_sensitive,
            ask_for=[ask_for] if isinstance(ask_for, str) else ask_for,
            final_text=answer_text(trajectory),
        )
