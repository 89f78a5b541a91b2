"""Our rewards as verl's custom reward function.

verl 0.9.1 config (the keys live under `reward`; a top-level `custom_reward_function` key, the
legacy place, is silently ignored by `main_ppo`)::

    reward.custom_reward_function.path=<site-packages>/agentmill/integrations/verl.py
    reward.custom_reward_function.name=compute_score

`data_source` `agentmill/<reward type>` (as `agentmill.export.verl` writes it) picks the reward:
`agentmill/math`, `agentmill/format`, `agentmill/exact`, `agentmill/contains`,
`agentmill/regex`. The response text is scored as the final answer with the same reward object
our score stage uses, so the numbers agree with ours. A ground truth written as JSON
(`extra_info["ground_truth_format"] == "json"`) is decoded first. verl needs a number, so
"no opinion" (None) is returned as 0.0.

>>> compute_score("agentmill/math", "so \\\\boxed{72}", "72")
1.0
>>> compute_score("agentmill/exact", "Paris.", '["paris", "Paris, France"]',
...               extra_info={"ground_truth_format": "json"})
1.0
"""

from __future__ import annotations

import functools
from typing import Any

import orjson

from agentmill.integrations.trl import completion_trajectory, run_sync
from agentmill.records import Task
from agentmill.scoring import REWARDS, Reward, build_reward
from agentmill.scoring.configs import ScoreConfig

PREFIX = "agentmill/"


@functools.cache
def reward_for(data_source: str) -> Reward:
    """The reward object of a data source (`agentmill/<type>`), built once."""
    kind = data_source.removeprefix(PREFIX)
    if not data_source.startswith(PREFIX) or kind not in REWARDS:
        raise ValueError(f"unknown data_source {data_source!r}: use agentmill/<reward type>")
    return build_reward(ScoreConfig(rewards=[kind]).rewards[0])


def _truth(ground_truth: Any, extra_info: dict[str, Any] | None) -> Any:
    is_json = (extra_info or {}).get("ground_truth_format") == "json"
    if is_json and isinstance(ground_truth, str):
        return orjson.loads(ground_truth)
    return None if ground_truth == "" else ground_truth


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict[str, Any] | None = None,
    **kwargs: Any,
) -> float:
    """Score one response with the reward `data_source` names."""
    task = Task(id=str((extra_info or {}).get("task_id", "")), prompt=[])
    task = task.model_copy(update={"ground_truth": _truth(ground_truth, extra_info)})
    value = run_sync(reward_for(data_source).score(completion_trajectory(solution_str), task))
    return 0.0 if value is None else float(value)
