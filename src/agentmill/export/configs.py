"""Config of the export stage."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class ExportConfig(BaseModel):
    """One export of the kept trajectories, written to `export/<path>` in the run folder."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["trl-sft"] = "trl-sft"
    path: str = "sft.jsonl"
    include_reasoning: bool = False  # as `reasoning_content` on assistant turns
