"""The balance stage: cap or resample records per key to a target mix.

>>> from agentmill.records import Provenance, Trajectory
>>> ts = [Trajectory(id=str(i), task_id="t", messages=[],
...                  provenance=Provenance(source="a" if i < 3 else "b")) for i in range(4)]
>>> res = balance(ts, BalanceConfig(key="source", mode="cap", cap=2))
>>> res.before, res.after
({'a': 3, 'b': 1}, {'a': 2, 'b': 1})
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agentmill.curation.dedup import mean_reward
from agentmill.curation.dedup_config import BalanceConfig
from agentmill.records import Task, Trajectory


@dataclass
class BalanceResult:
    """Kept records (in input order; upsampled copies appended), drops with reason, counts."""

    kept: list[Trajectory] = field(default_factory=list)
    dropped: list[tuple[Trajectory, str]] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)


def first_tool(t: Trajectory) -> str:
    """The name of the first tool the trajectory called, or "none".

    >>> first_tool(Trajectory(id="a", task_id="t", messages=[]))
    'none'
    """
    for m in t.messages:
        for c in m.tool_calls or []:
            return c.function.name
    return "none"


def reward_bucket(t: Trajectory) -> str:
    """Mean reward rounded to the nearest 0.25, or "none".

    >>> reward_bucket(Trajectory(id="a", task_id="t", messages=[], rewards={"x": 0.7}))
    '0.75'
    """
    reward = mean_reward(t)
    return "none" if reward is None else f"{round(reward * 4) / 4:g}"


def category(t: Trajectory, task: Task | None = None) -> str:
    """`metadata.category` of the trajectory, else of its task, else "none".

    >>> category(Trajectory(id="a", task_id="t", messages=[]),
    ...          Task.create("q", metadata={"category": "algebra"}))
    'algebra'
    """
    for meta in (t.metadata, task.metadata if task is not None else {}):
        if meta.get("category") is not None:
            return str(meta["category"])
    return "none"


def _lookup(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
        if obj is None:
            return "none"
    return str(obj)


def key_of(t: Trajectory, key: str, task: Task | None = None) -> str:
    """The balance key of `t`: a built-in name or a dotted path ("metadata.category"), or a
    path into its task ("task.metadata.level").

    >>> t = Trajectory(id="a", task_id="t", messages=[], metadata={"category": "math"})
    >>> key_of(t, "metadata.category"), key_of(t, "model"), key_of(t, "metadata.nope")
    ('math', 'none', 'none')
    """
    if key == "tool":
        return first_tool(t)
    if key in ("reward", "reward_bucket"):
        return reward_bucket(t)
    if key == "category":
        return category(t, task)
    if key.startswith("task."):
        return _lookup(task, key.removeprefix("task.")) if task is not None else "none"
    return _lookup(t, "provenance.source" if key == "source" else key)


def balance(
    records: list[Trajectory], cfg: BalanceConfig, tasks: Mapping[str, Task] | None = None
) -> BalanceResult:
    """Cap (`mode: cap`) or resample (`mode: proportions`) per key; counts before and after.
    `tasks` (by id) serve the keys that read the task ("category", "task.*").

    >>> balance([], BalanceConfig(mode="cap", cap=1)).after
    {}
    """
    tasks = tasks or {}
    keys = [key_of(t, cfg.key, tasks.get(t.task_id)) for t in records]
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    if cfg.mode == "cap":
        targets = {
            k: min(len(v), cfg.cap if cfg.cap is not None else len(v)) for k, v in groups.items()
        }
    else:
        targets = proportion_targets({k: len(v) for k, v in groups.items()}, cfg)
    return _apply(records, keys, groups, targets, cfg)


def proportion_targets(counts: dict[str, int], cfg: BalanceConfig) -> dict[str, int]:
    """Records per key for the target fractions (keys absent from the data are ignored).

    Without upsampling the total is the largest every key can supply; with it, the total is
    the number of records under the listed keys. `max_total` lowers either; when it does,
    the shares are rounded so they sum to it exactly (largest remainders round up).

    >>> proportion_targets({"a": 90, "b": 10}, BalanceConfig(mode="proportions",
    ...                    proportions={"a": 0.5, "b": 0.5}))
    {'a': 10, 'b': 10}
    >>> proportion_targets({"a": 90, "b": 10}, BalanceConfig(mode="proportions",
    ...                    proportions={"a": 0.5, "b": 0.5}, allow_upsample=True, max_total=5))
    {'a': 3, 'b': 2}
    """
    fracs = {k: f for k, f in cfg.proportions.items() if f > 0 and counts.get(k, 0) > 0}
    total_frac = sum(fracs.values())
    if not fracs:
        return {k: 0 for k in counts}
    if cfg.allow_upsample:
        total = sum(counts[k] for k in fracs)
    else:
        total = min(counts[k] * total_frac / f for k, f in fracs.items())
    out = {k: 0 for k in counts}
    if cfg.max_total is not None and cfg.max_total < total:  # exactly max_total in all
        quotas = {k: cfg.max_total * f / total_frac for k, f in fracs.items()}
        out |= {k: int(q) for k, q in quotas.items()}
        short = cfg.max_total - sum(out.values())
        for k in sorted(quotas, key=lambda k: (out[k] - quotas[k], k))[:short]:
            out[k] += 1  # the largest remainders round up
        return out
    for k, f in fracs.items():
        want = round(total * f / total_frac)
        out[k] = want if cfg.allow_upsample else min(want, counts[k])
    return out


def _apply(
    records: list[Trajectory],
    keys: list[str],
    groups: dict[str, list[int]],
    targets: dict[str, int],
    cfg: BalanceConfig,
) -> BalanceResult:
    rng = random.Random(cfg.seed)
    keep: set[int] = set()
    extra: list[int] = []
    for k in sorted(groups):
        members, want = groups[k], targets.get(k, 0)
        if cfg.mode == "cap":
            keep.update(members[:want])
        else:
            keep.update(rng.sample(members, min(want, len(members))))
        if want > len(members):
            extra.extend(rng.choices(members, k=want - len(members)))
    kept_idx = [i for i in range(len(records)) if i in keep] + extra
    reason = f"balance_{cfg.mode}"
    dropped = [(t, f"{reason}:{keys[i]}") for i, t in enumerate(records) if i not in keep]
    before = {k: len(v) for k, v in sorted(groups.items())}
    after = dict(sorted(Counter(keys[i] for i in kept_idx).items()))
    return BalanceResult(
        kept=[records[i] for i in kept_idx], dropped=dropped, before=before, after=after
    )
