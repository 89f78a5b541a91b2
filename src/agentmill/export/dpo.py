"""DPO preference pairs from several scored samples of the same task (TRL's explicit-prompt form).

Per task: the chosen sample has the highest reward (among ties, the simplest: fewest tool
calls, then fewest assistant steps, then fewest tokens); each rejected sample scores at least
`min_margin` lower (largest margin first), up to `max_pairs_per_task` pairs. With
`simpler_mode`, remaining room is filled by pairing the chosen sample with equally rewarded
samples that are clearly longer: at least `simpler_min_steps` more assistant steps or
`simpler_min_tokens` more completion tokens.

The messages both samples share (system, user turn, identical earlier calls and results) go
in `prompt`; `chosen` and `rejected` are the continuations from the first assistant turn where
they differ (tool-call ids are ignored when comparing). All three are lists of TRL messages
with tool-call arguments as dicts. Samples that cannot be rendered (a malformed call, no final
answer, no reward) are skipped and counted in `dropped` by reason.

>>> from agentmill.records import Message, Trajectory
>>> user = Message(role="user", content="2+2?")
>>> def sample(i, answer, reward):
...     return Trajectory(id=f"s{i}", task_id="t", rewards={"math": reward},
...                       messages=[user, Message(role="assistant", content=answer)])
>>> pairs = dpo_pairs([sample(0, "5", 0.0), sample(1, "4", 1.0)], reward="math")
>>> p = pairs[0]
>>> p["prompt"], p["chosen"][0]["content"], p["rejected"][0]["content"], p["chosen_id"]
([{'role': 'user', 'content': '2+2?'}], '4', '5', 's1')
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from agentmill.export.trajectory import final_reward
from agentmill.export.trl_sft import ExportError, to_trl_sft
from agentmill.records import Trajectory, content_hash

_TIE = 1e-9


@dataclass(frozen=True)
class _Sample:
    trajectory: Trajectory
    reward: float
    messages: list[dict[str, Any]]

    @property
    def calls(self) -> int:
        return sum(len(m.get("tool_calls") or []) for m in self.messages)

    @property
    def steps(self) -> int:
        return sum(m["role"] == "assistant" for m in self.messages)

    @property
    def tokens(self) -> int:
        """Completion tokens as counted by the backend, else about 4 characters a token."""
        if self.trajectory.usage.completion_tokens:
            return self.trajectory.usage.completion_tokens
        texts = (m.get("content") or "" for m in self.messages if m["role"] == "assistant")
        return sum(len(text) for text in texts) // 4

    @property
    def rank(self) -> tuple[float, int, int, int]:
        return (-self.reward, self.calls, self.steps, self.tokens)


def _sample(t: Trajectory, reward: str | None, dropped: Counter[str]) -> _Sample | None:
    value = final_reward(t, reward)
    if value is None:
        dropped["no_reward"] += 1
        return None
    try:
        messages = to_trl_sft(t, tools=[])["messages"]
    except ExportError as e:
        dropped[e.reason] += 1
        return None
    return _Sample(t, value, messages)


def _comparable(m: dict[str, Any]) -> dict[str, Any]:
    """A message without the ids that differ between samples of the same content."""
    out = {k: v for k, v in m.items() if k != "tool_call_id"}
    if "tool_calls" in m:
        out["tool_calls"] = [{k: v for k, v in c.items() if k != "id"} for c in m["tool_calls"]]
    return out


def split_prefix(
    a: list[dict[str, Any]], b: list[dict[str, Any]]
) -> tuple[int, list[dict[str, Any]]]:
    """(k, shared prefix): the two lists are equal (ids aside) before k, and both have an
    assistant turn at k where they start to differ; k is -1 when no such turn exists.

    >>> u, x, y = {"role": "user", "content": "q"}, {"role": "assistant", "content": "x"}, \
{"role": "assistant", "content": "y"}
    >>> split_prefix([u, x], [u, y])[0], split_prefix([u, x], [u, x])[0]
    (1, -1)
    """
    k = 0
    while k < min(len(a), len(b)) and _comparable(a[k]) == _comparable(b[k]):
        k += 1
    if k == len(a) and k == len(b):
        return -1, a
    while k >= 0 and not (_is_assistant(a, k) and _is_assistant(b, k)):
        k -= 1
    return k, a[: max(k, 0)]


def _is_assistant(messages: list[dict[str, Any]], k: int) -> bool:
    return k < len(messages) and messages[k]["role"] == "assistant"


def _pair(chosen: _Sample, rejected: _Sample, kind: str) -> dict[str, Any] | None:
    k, prompt = split_prefix(chosen.messages, rejected.messages)
    if k <= 0:  # identical samples, or no shared prompt before the first difference
        return None
    c, r = chosen.trajectory, rejected.trajectory
    return {
        "id": content_hash([c.id, r.id]),
        "task_id": c.task_id,
        "chosen_id": c.id,
        "rejected_id": r.id,
        "prompt": prompt,
        "chosen": chosen.messages[k:],
        "rejected": rejected.messages[k:],
        "tools": c.tools,
        "chosen_reward": chosen.reward,
        "rejected_reward": rejected.reward,
        "kind": kind,
    }


def _clearly_longer(s: _Sample, best: _Sample, min_steps: int, min_tokens: int) -> bool:
    more_steps = s.steps - best.steps >= min_steps
    return more_steps or (min_tokens > 0 and s.tokens - best.tokens >= min_tokens)


def _candidates(
    samples: list[_Sample], min_margin: float, simpler: tuple[int, int] | None
) -> list[tuple[_Sample, str]]:
    best = samples[0]
    worse = [s for s in samples if best.reward - s.reward >= min_margin - _TIE]
    worse.sort(key=lambda s: (s.reward, s.trajectory.sample_index))
    found = [(s, "reward") for s in worse if s is not best]
    if simpler is not None:
        ties = [s for s in samples[1:] if abs(s.reward - best.reward) <= _TIE]
        found += [(s, "simpler") for s in ties if _clearly_longer(s, best, *simpler)]
    return found


def _task_pairs(
    samples: list[_Sample], min_margin: float, cap: int, simpler: tuple[int, int] | None
) -> list[dict[str, Any]]:
    samples = sorted(samples, key=lambda s: (s.rank, s.trajectory.sample_index))
    pairs: list[dict[str, Any]] = []
    for rejected, kind in _candidates(samples, min_margin, simpler):
        pair = _pair(samples[0], rejected, kind)
        if pair is not None and len(pairs) < cap:
            pairs.append(pair)
    return pairs


def dpo_pairs(
    trajectories: list[Trajectory],
    *,
    reward: str | None = None,
    min_margin: float = 0.5,
    max_pairs_per_task: int = 1,
    simpler_mode: bool = False,
    simpler_min_steps: int = 2,
    simpler_min_tokens: int = 0,
    dropped: Counter[str] | None = None,
) -> list[dict[str, Any]]:
    """Preference pairs, task by task in first-seen order. `reward` None: the mean of each
    sample's rewards. `dropped` (optional) counts skipped samples by reason."""
    dropped = dropped if dropped is not None else Counter()
    by_task: dict[str, list[_Sample]] = {}
    for t in trajectories:
        s = _sample(t, reward, dropped)
        if s is not None:
            by_task.setdefault(t.task_id, []).append(s)
    simpler = (simpler_min_steps, simpler_min_tokens) if simpler_mode else None
    return [
        pair
        for samples in by_task.values()
        for pair in _task_pairs(samples, min_margin, max_pairs_per_task, simpler)
    ]
