"""Text rewards: exact match, containment and regular expressions on the final answer.

Each has a pure function (`exact_match`, `contains`, `regex_match`) and a `Reward` object.
A ground truth given as a list means "any of these": the best score over its items counts.
A reward returns None when there is nothing to compare with (no task, no ground truth).

>>> exact_match("  Paris. ", "paris")
1.0
>>> contains("The capital is Paris.", "paris")
1.0
>>> regex_match("see [3]", r"\\[\\d+\\]")
1.0
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agentmill.records import Task, Trajectory
from agentmill.scoring.configs import ContainsRewardConfig, ExactRewardConfig, RegexRewardConfig

_TRAILING_PUNCT = ".,;:!?"


def final_text(trajectory: Trajectory) -> str:
    """The trajectory's answer: `final_answer`, else the text of the last assistant message
    when that message made no tool call (a turn that called a tool is not an answer).

    >>> from agentmill.records import Message
    >>> t = Trajectory(id="t", task_id="x", messages=[Message(role="assistant", content="42")])
    >>> final_text(t)
    '42'
    """
    if trajectory.final_answer is not None:
        return trajectory.final_answer
    for m in reversed(trajectory.messages):
        if m.role == "assistant":
            return "" if m.tool_calls else m.text
    return ""


def normalize_text(text: str) -> str:
    """Casefolded, whitespace collapsed, trailing punctuation dropped.

    >>> normalize_text("  The  Answer!! ")
    'the answer'
    """
    return " ".join(text.split()).rstrip(_TRAILING_PUNCT).strip().casefold()


def exact_match(response: str, ground_truth: str, normalize: bool = True) -> float:
    """1.0 when the two strings are equal (after `normalize_text` when `normalize`), else 0.0.

    >>> exact_match("Paris", "paris", normalize=False)
    0.0
    """
    if normalize:
        return float(normalize_text(response) == normalize_text(ground_truth))
    return float(response == ground_truth)


def contains(response: str, needle: str, case_sensitive: bool = False) -> float:
    """1.0 when `needle` occurs in `response`, else 0.0. An empty needle never counts.

    >>> contains("Paris, France", "PARIS", case_sensitive=True)
    0.0
    """
    if not needle:
        return 0.0
    if case_sensitive:
        return float(needle in response)
    return float(needle.casefold() in response.casefold())


def regex_match(response: str, pattern: str | re.Pattern[str], full_match: bool = False) -> float:
    """1.0 when `pattern` matches (`re.search`, or `re.fullmatch` with `full_match`), else 0.0.

    >>> regex_match("answer: 42", r"\\d+", full_match=True)
    0.0
    """
    rx = re.compile(pattern) if isinstance(pattern, str) else pattern
    found = rx.fullmatch(response) if full_match else rx.search(response)
    return float(found is not None)


def _truths(task: Task | None) -> list[str]:
    """The task's acceptable answers as strings; empty when it has none."""
    if task is None or task.ground_truth is None:
        return []
    gt = task.ground_truth
    items = gt if isinstance(gt, list) else [gt]
    return [str(x) for x in items if x is not None]


def _best(text: str, truths: list[str], fn: Callable[[str, str], float]) -> float | None:
    return max((fn(text, t) for t in truths), default=None)


class ExactReward:
    """`exact_match` of the final answer against the ground truth (or any item of a list).

    >>> import asyncio
    >>> t = Trajectory(id="t", task_id="x", messages=[], final_answer="Paris.")
    >>> asyncio.run(ExactReward(ExactRewardConfig()).score(t, Task.create("?", "paris")))
    1.0
    """

    def __init__(self, cfg: ExactRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        norm = self.cfg.normalize
        return _best(final_text(trajectory), _truths(task), lambda a, b: exact_match(a, b, norm))


class ContainsReward:
    """1.0 when the final answer contains the ground truth (or any item of a list).

    >>> import asyncio
    >>> t = Trajectory(id="t", task_id="x", messages=[], final_answer="It is Paris.")
    >>> asyncio.run(ContainsReward(ContainsRewardConfig()).score(t, Task.create("?", "paris")))
    1.0
    """

    def __init__(self, cfg: ContainsRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        case = self.cfg.case_sensitive
        return _best(final_text(trajectory), _truths(task), lambda a, b: contains(a, b, case))


class RegexReward:
    """`regex_match` of the final answer against `cfg.pattern`, or, when that is None, against
    the task's ground truth used as a pattern. A configured pattern is compiled here, so a bad
    one fails when the reward is built; a ground truth that is not a valid pattern gives None.

    >>> import asyncio
    >>> t = Trajectory(id="t", task_id="x", messages=[], final_answer="as shown in [2]")
    >>> asyncio.run(RegexReward(RegexRewardConfig(pattern=r"\\[\\d+\\]")).score(t, None))
    1.0
    """

    def __init__(self, cfg: RegexRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self._pattern = re.compile(cfg.pattern) if cfg.pattern is not None else None

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        text, full = final_text(trajectory), self.cfg.full_match
        if self._pattern is not None:
            return regex_match(text, self._pattern, full)
        try:
            return _best(text, _truths(task), lambda a, p: regex_match(a, p, full))
        except re.error:  # the task's data is broken, not the answer
            return None
