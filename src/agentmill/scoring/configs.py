"""Config models of the rewards. Each reward is named in the config, by type or in full:

score:
  rewards: [math, {type: regex, name: cites, pattern: "\\[\\d+\\]"}]
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator

from agentmill.configbase import Component
from agentmill.rollout.configs import PythonToolConfig


class MathRewardConfig(Component):
    type: Literal["math"] = "math"
    name: str = "math"


class CodeRewardConfig(Component):
    type: Literal["code"] = "code"
    name: str = "code"
    sandbox: PythonToolConfig = Field(default_factory=PythonToolConfig)


class ToolCallRewardConfig(Component):
    type: Literal["tool_call"] = "tool_call"
    name: str = "tool_call"
    order_sensitive: bool = False  # parallel calls (same step) match in any order unless set


class FormatRewardConfig(Component):
    type: Literal["format"] = "format"
    name: str = "format"
    # each check scores 1 or 0; the reward is their mean
    require: list[Literal["boxed", "answer", "well_formed_calls", "no_tool_errors"]] = Field(
        default_factory=lambda: ["answer", "well_formed_calls"]
    )


class ExactRewardConfig(Component):
    type: Literal["exact"] = "exact"
    name: str = "exact"
    normalize: bool = True  # case, whitespace and trailing punctuation


class ContainsRewardConfig(Component):
    type: Literal["contains"] = "contains"
    name: str = "contains"
    case_sensitive: bool = False


class RegexRewardConfig(Component):
    type: Literal["regex"] = "regex"
    name: str = "regex"
    pattern: str | None = None  # None: the task's ground truth is the pattern
    full_match: bool = False


def _reward_type(v: Any) -> str:
    if isinstance(v, str):
        return v
    return v.get("type", "") if isinstance(v, dict) else getattr(v, "type", "")


RewardConfig = Annotated[
    Annotated[MathRewardConfig, Tag("math")]
    | Annotated[CodeRewardConfig, Tag("code")]
    | Annotated[ToolCallRewardConfig, Tag("tool_call")]
    | Annotated[FormatRewardConfig, Tag("format")]
    | Annotated[ExactRewardConfig, Tag("exact")]
    | Annotated[ContainsRewardConfig, Tag("contains")]
    | Annotated[RegexRewardConfig, Tag("regex")],
    Discriminator(_reward_type),
]


class ScoreConfig(Component):
    """The score stage: each reward's value is stored on the trajectory under its name."""

    rewards: list[RewardConfig] = Field(default_factory=list)

    @field_validator("rewards", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """`rewards: [math, format]` is short for `[{type: math}, {type: format}]`."""
        return [{"type": r} if isinstance(r, str) else r for r in v] if isinstance(v, list) else v

    @field_validator("rewards")
    @classmethod
    def _names_unique(cls, rewards: list[Any]) -> list[Any]:
        names = [r.name for r in rewards]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two rewards are named {dup[0]!r}; give one a different `name`")
        return rewards
