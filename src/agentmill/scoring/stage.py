"""The score stage: apply the configured rewards to every trajectory, resumably.

Reads `rollout/records.jsonl`, writes `score/records.jsonl` (the same trajectories with
`rewards` filled in). A reward that raises is recorded in failures.jsonl (reason
`reward_error:<name>`) and left off that trajectory; the others still apply.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable

from agentmill.records import Task, Trajectory
from agentmill.scoring import Reward, build_reward
from agentmill.scoring.configs import ScoreConfig
from agentmill.store import Stage

CONCURRENCY = 8  # rewards may run sandboxes: a few at a time on a small machine


async def score_trajectory(
    traj: Trajectory, task: Task | None, rewards: list[Reward], errors: Counter[str] | None = None
) -> Trajectory:
    """The trajectory with each reward's value added (None values are left out)."""
    values = dict(traj.rewards)
    for reward in rewards:
        try:
            value = await reward.score(traj, task)
        except Exception as e:  # a broken reward must not lose the other scores
            if errors is not None:
                errors[f"reward_error:{reward.name}:{type(e).__name__}: {e}"] += 1
            continue
        if value is not None:
            values[reward.name] = float(value)
    return traj.model_copy(update={"rewards": values})


async def run_score_stage(
    cfg: ScoreConfig,
    trajectories: Iterable[Trajectory],
    tasks: dict[str, Task],
    stage: Stage,
    failures,
) -> Counter[str]:
    """Score every trajectory not yet in `stage`; return failure counts by reason."""
    rewards = [build_reward(c) for c in cfg.rewards]
    done = stage.done_keys("id")
    todo = [t for t in trajectories if t.id not in done]
    failed: Counter[str] = Counter()
    sem = asyncio.Semaphore(CONCURRENCY)

    async def one(traj: Trajectory) -> None:
        errors: Counter[str] = Counter()
        async with sem:
            scored = await score_trajectory(traj, tasks.get(traj.task_id), rewards, errors)
        for detail in errors:
            reason = ":".join(detail.split(":")[:2])
            failed[reason] += 1
            failures.add("score", traj.id, reason, detail)
        stage.writer().append(scored.to_json())

    await asyncio.gather(*(one(t) for t in todo))
    return failed
