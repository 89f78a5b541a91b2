"""Config of the LLM judge (the `judge:` section of a run config, and `agentmill judge`).

judge:
  backend: judge                 # a key of `backends`
  custom_rubrics: |
    The answer must cite the order number.
  temperature: 0.0
  max_tokens: 1024               # the judge's response length
  keep: [GOOD]                   # which verdicts pass; ERROR never passes (it is retried)
  structured: false              # true: the verdict as a forced `verdict` tool call
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from agentmill.configbase import NO_FP, Component

Kept = Literal["GOOD", "BAD"]


class JudgeConfig(Component):
    """Any backend as a strict QA reviewer that marks each trajectory GOOD or BAD.

    Changing `keep`, `max_concurrency` or `print_reason` never re-judges: verdicts are stored
    per trajectory and `keep` is applied to them afterwards.
    """

    backend: str = "judge"
    # Extra criteria, one per line (a list is joined with newlines), after the built-in ones.
    custom_rubrics: str = ""
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=16)
    # Show the tool calls and their results to the judge, each cut to `max_step_chars`.
    show_steps: bool = True
    max_step_chars: int = Field(default=2000, ge=100)
    # Ask for the verdict as a forced call of a `verdict` tool ({reason, result: GOOD|BAD}):
    # constrained decoding on the local backend, `tool_choice` on a server. For judges too small
    # to follow the output format (they answer the query instead); a strong judge needs no help.
    structured: bool = False
    max_concurrency: int = Field(default=16, ge=1, json_schema_extra=NO_FP)
    print_reason: bool = Field(default=False, json_schema_extra=NO_FP)
    keep: list[Kept] = Field(
        default_factory=lambda: ["GOOD"], min_length=1, json_schema_extra=NO_FP
    )

    @field_validator("custom_rubrics", mode="before")
    @classmethod
    def _join(cls, v: object) -> object:
        """`custom_rubrics` may be a list of lines."""
        return "\n".join(str(x) for x in v) if isinstance(v, list) else v

    @field_validator("keep", mode="before")
    @classmethod
    def _upper(cls, v: object) -> object:
        if isinstance(v, str):
            v = [v]
        return [str(x).upper() for x in v] if isinstance(v, list) else v
