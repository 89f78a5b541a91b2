"""Math answers: find the final answer in a response and compare it with the ground truth.

`extract_answer` looks, in this order, for the last `\\boxed{...}` (or `\\fbox{...}`), a GSM8K
`#### 42` line, "the (final) answer is ..." / "answer: ...", and at last the last number in
the text. `math_reward` compares that answer with the ground truth through math_verify
(sympy), so `\\frac{1}{2}`, `\\dfrac12`, `1/2` and `0.5` are all equal.

Conventions, each covered by tests/test_math_reward.py:

- percentages: an answer written with `%` (or "percent") equals both its number and its
  fraction (`50%` matches a gold `50`, GSM8K's way of writing 50%, and a gold `0.5`); bare
  numbers are taken as written, so `0.5` does not match a gold `50`.
- thousands separators go when the whole answer is one grouped number (`1,234` is 1234), so a
  list written `100,200` also reads as 100200 (math_verify reads it so inside `\\boxed` too).
- units and currency: `42 apples`, `$42`, `42 cm`, `42\\text{ cm}` all read as 42 (words after
  a number, separated by a space, are dropped: `5 x` reads as 5, `5x` stays `5x`);
  `1.5e3` reads as 1500 (exponents up to 3 digits).
- trailing punctuation and `$...$` / `\\(...\\)` wrappers are ignored; `−` is a minus.
- decimals equal fractions to 6 places (math_verify's rounding): `0.333333` is 1/3, `0.333`
  is not.
- a ground truth that is plain words ("Paris", "yes") is compared as text, case-insensitive:
  sympy would read it as a product of symbols, equal to any anagram.
- a GSM8K-style solution as ground truth is reduced to what follows its last `####`; one with
  a `\\boxed{}` to the boxed part.

Never raises: anything that fails to parse scores 0.0. math_verify's timeouts are off
(`parsing_timeout=None`, `timeout_seconds=None`): they use SIGALRM, which works only on the
main thread and cancels any other alarm (pytest-timeout's, for one), and rewards run in worker
threads. Instead, before sympy evaluates anything, answers over 1,000 characters and
expressions that would explode (a power with over 10,000 digits, a symbolic power over 100, a
factorial over 1,000) score 0.0. Sympy slowness of other kinds is not bounded here.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from decimal import Decimal
from typing import Any

from agentmill.records import Task, Trajectory
from agentmill.scoring.configs import MathRewardConfig
from agentmill.scoring.text import final_text, normalize_text

MAX_ANSWER_CHARS = 1000
MAX_POWER_DIGITS = 10_000
MAX_SYMBOLIC_EXPONENT = 100
MAX_FACTORIAL = 1000

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_HASHES = re.compile(r"####[ \t]*([^\n]*)")
_PHRASE = re.compile(r"\banswer(?:\s+is\b|\s*\**\s*:)\s*:?", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])-)?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:/\d+)?|\.\d+)%?"
)
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_WRAP = re.compile(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}")
_CURRENCY = re.compile(r"^(-?)\s*(?:\\\$|\$|€|£)\s*(?=[\d.])")
_NUMBER_WITH_UNIT = re.compile(
    r"(?P<num>-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d{1,3})?(?:/\d+)?)"
    r"\s*(?P<pct>\\?%)?"
    r"(?P<unit>\s*\\(?:text|mathrm|mbox)\{[^{}]*\}|\s+[^\W\d_][^\W\d_.\s]*(?:\s+[^\W\d_]+)*)?"
)
_PERCENT_WORD = re.compile(r"\bper\s?cent\b|\bpct\b", re.IGNORECASE)

_WORDS = re.compile(r"[^\W\d_]{2,}(?:[\s'-]+[^\W\d_]+)*")


def extract_answer(response: str) -> str | None:
    """The final answer written in `response`, as it was written; None when there is none.

    >>> extract_answer(r"first \\boxed{1}, then \\boxed{\\frac{3}{4}}")
    '\\\\frac{3}{4}'
    >>> extract_answer("She has 3 + 4 = 7 apples.\\n#### 7")
    '7'
    >>> extract_answer("So the final answer is 3.5 meters. Done.")
    '3.5 meters'
    >>> extract_answer("I got 12, then 15.")
    '15'
    >>> extract_answer("no digits here") is None
    True
    """
    if not response:
        return None
    text = response.replace("\u2212", "-")
    for find in (last_boxed, _after_hashes, _after_phrase, _last_number):
        found = find(text)
        if found is not None and found.strip():
            return found.strip()
    return None


def last_boxed(text: str) -> str | None:
    """The content of the last complete `\\boxed{...}` / `\\fbox{...}` (braces balanced).

    >>> last_boxed(r"\\boxed{\\frac{1}{2}} and \\fbox{x^{2}}")
    'x^{2}'
    >>> last_boxed(r"\\boxed{5") is None
    True
    """
    found = None
    for m in _BOX.finditer(text):
        inner = _balanced(text, m.end())
        if inner is not None:
            found = inner
    return found


def _balanced(text: str, start: int) -> str | None:
    """The text from `start` to the brace closing the one just before it."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _after_hashes(text: str) -> str | None:
    found = _HASHES.findall(text)
    return found[-1] if found else None


def _after_phrase(text: str) -> str | None:
    """The rest of the sentence after the last "answer is" / "answer:" (or the next line)."""
    matches = list(_PHRASE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :]
    line = next((ln for ln in rest.splitlines() if ln.strip()), "")
    end = _SENTENCE_END.search(line)
    return line[: end.start()] if end else line


def _last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def clean_answer(answer: str) -> str:
    """An answer as math_verify reads it best: wrappers, punctuation, units, currency and
    thousands separators dropped.

    >>> clean_answer("$1,234$.")
    '1234'
    >>> clean_answer("**\\\\$18.50 dollars**")
    '18.50'
    >>> clean_answer("50%")
    '50\\\\%'
    """
    s = answer.replace("\u2212", "-").strip().strip("*").strip()
    s = _unwrap(s.rstrip(".,;:!?").strip())
    s = _TEXT_WRAP.sub(lambda m: m.group(1), s) if _TEXT_WRAP.fullmatch(s) else s
    s = _CURRENCY.sub(r"\1", s.rstrip(".,;:!?").strip())
    m = _NUMBER_WITH_UNIT.fullmatch(s)
    if m is None:
        return s
    number = m.group("num").replace(",", "")
    if "e" in number.lower() and "/" not in number:  # math_verify reads 1.5e3 as 1.5*e*3
        number = format(Decimal(number), "f")
    percent = m.group("pct") or _PERCENT_WORD.search(m.group("unit") or "")
    return number + ("\\%" if percent else "")


def _unwrap(s: str) -> str:
    for left, right in _WRAPPERS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left) : -len(right)].strip()
    return s


def gold_answer(ground_truth: str) -> str:
    """The answer part of a ground truth: after the last `####`, else the last `\\boxed{}`,
    else all of it; cleaned like a prediction.

    >>> gold_answer("3 + 4 = 7 so she has 7.\\n#### 7")
    '7'
    """
    text = ground_truth.replace("\u2212", "-")
    answer = (_after_hashes(text) or "") if "####" in text else (last_boxed(text) or text)
    return clean_answer(answer)


def math_reward(response: str, ground_truth: str) -> float:
    """1.0 when the final answer in `response` equals `ground_truth` mathematically, else 0.0.

    >>> math_reward(r"so it is \\boxed{\\dfrac{1}{2}}", "0.5")
    1.0
    >>> math_reward("The answer is 1,234 apples.", "#### 1234")
    1.0
    >>> math_reward("The answer is 50%.", "50")
    1.0
    >>> math_reward("The answer is 0.5", "50")
    0.0
    >>> math_reward("}}}{{{\\\\boxed{", "7")
    0.0
    """
    try:
        predicted = extract_answer(response or "")
        if predicted is None:
            return 0.0
        return float(_equivalent(gold_answer(str(ground_truth)), clean_answer(predicted)))
    except Exception:  # a reward must never take the run down; unparseable is wrong
        return 0.0


def _equivalent(gold: str, predicted: str) -> bool:
    if not gold or not predicted:
        return False
    if _WORDS.fullmatch(gold):
        return normalize_text(gold) == normalize_text(predicted)
    g = _parse(gold)
    if not g:  # math_verify cannot read the gold: fall back to the text itself
        return normalize_text(gold) == normalize_text(predicted)
    p = _parse(predicted)
    mv = _math_verify()
    return bool(p) and bool(mv.verify(g, p, timeout_seconds=None))


def _parse(answer: str) -> list[Any]:
    """math_verify's reading of one answer; [] when unreadable or too costly to evaluate."""
    if len(answer) > MAX_ANSWER_CHARS:
        return []
    mv = _math_verify()
    config = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    parsed = mv.parse(f"\\boxed{{{answer}}}", extraction_config=config, parsing_timeout=None)
    if any(_explosive(x) for x in parsed if not isinstance(x, str)):
        return []
    return parsed


def _explosive(expr: Any) -> bool:
    """True when evaluating `expr` could take minutes or gigabytes (10^(10^10), (10^10)!)."""
    import sympy

    for node in sympy.preorder_traversal(expr):
        if isinstance(node, sympy.Pow) and node.exp.is_number and _huge_power(node):
            return True
        numeric = isinstance(node, sympy.factorial) and node.args[0].is_number
        if numeric and _magnitude(node.args[0]) > MAX_FACTORIAL:
            return True
    return False


def _huge_power(node: Any) -> bool:
    exponent = _magnitude(node.exp)
    if node.base.free_symbols:
        return exponent > MAX_SYMBOLIC_EXPONENT
    return exponent * math.log10(max(_magnitude(node.base), 2.0)) > MAX_POWER_DIGITS


def _magnitude(x: Any) -> float:
    """|x| as a float through mpmath (cheap even for 10^(10^10)); inf when it has none."""
    try:
        value = abs(complex(x.evalf(15)))
    except (TypeError, ValueError, OverflowError):
        return math.inf
    return value if math.isfinite(value) else math.inf


class _HideTimeoutNotice(logging.Filter):
    """math_verify warns once that timeouts are off; we turn them off on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Timeout is disabled" not in record.getMessage()


@functools.cache
def _math_verify() -> Any:
    """math_verify, imported on first use (it pulls in sympy, about a second)."""
    import math_verify

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_HideTimeoutNotice())
    return math_verify


class MathReward:
    """`math_reward` of the final answer (or the last assistant text) against the task's
    ground truth; None when the task has none. Runs in a worker thread (sympy is CPU-bound).

    >>> t = Trajectory(id="t", task_id="x", messages=[], final_answer="\\\\boxed{42}")
    >>> asyncio.run(MathReward(MathRewardConfig()).score(t, Task.create("6*7?", "42")))
    1.0
    """

    def __init__(self, cfg: MathRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        if task is None or task.ground_truth is None:
            return None
        truth = str(task.ground_truth)
        return await asyncio.to_thread(math_reward, final_text(trajectory), truth)
