"""The filter stage: keep the trajectories that pass; count every drop by its reason.

`drop_reason` is a pure function: `None` keeps the trajectory.

>>> from agentmill.records import Message, Trajectory
>>> t = Trajectory(id="a", task_id="t", messages=[Message(role="user", content="hi")],
...                rewards={"math": 0.0}, stop_reason="answer")
>>> drop_reason(t, FilterConfig(min_reward=1.0))
'reward_below_min:math'
>>> drop_reason(t, FilterConfig(min_reward=0.0)) is None
True
"""

from __future__ import annotations

from agentmill.curation.configs import FilterConfig
from agentmill.records import Trajectory


def drop_reason(t: Trajectory, cfg: FilterConfig) -> str | None:
    """Why `t` is dropped under `cfg`, or None when it is kept."""
    if cfg.successful_only and (t.status != "ok" or t.stop_reason not in ("answer", "stop")):
        return f"not_successful:{t.stop_reason if t.status == 'ok' else t.status}"
    if cfg.max_steps is not None and t.agent is not None and t.agent.steps > cfg.max_steps:
        return "too_many_steps"
    if cfg.valid_tool_calls_only and _has_invalid_calls(t):
        return "invalid_tool_calls"
    if cfg.valid_tool_calls_only and _leaks_protocol(t):
        return "protocol_tags_in_text"
    if cfg.min_reward is not None:
        return _reward_reason(t, cfg)
    return None


def _has_invalid_calls(t: Trajectory) -> bool:
    if t.agent is not None and (t.agent.malformed_calls or t.agent.unknown_tool_calls):
        return True
    calls = [c for m in t.messages for c in (m.tool_calls or [])]
    return any(c.function.arguments is None for c in calls)


# The text protocol's tags (rollout/protocol.py). Parsed calls are taken out of the text, so a
# tag left in an assistant's text is a broken call or an imitated tool response ("42
# </tool_response>"): training on it would teach the student to write protocol debris.
_TAGS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")


def _leaks_protocol(t: Trajectory) -> bool:
    """An assistant message's text holds a tool-protocol tag.

    >>> from agentmill.records import Message
    >>> m = [Message(role="assistant", content="302\\n</tool_response>")]
    >>> _leaks_protocol(Trajectory(id="a", task_id="t", messages=m))
    True
    """
    return any(m.role == "assistant" and any(tag in m.text for tag in _TAGS) for m in t.messages)


def _reward_reason(t: Trajectory, cfg: FilterConfig) -> str | None:
    names = [cfg.reward] if cfg.reward else sorted(t.rewards)
    if not names or any(n not in t.rewards for n in names):
        return f"no_reward:{cfg.reward}" if cfg.reward else "no_reward"
    low = [n for n in names if t.rewards[n] < (cfg.min_reward or 0.0)]
    return f"reward_below_min:{low[0]}" if low else None
