"""Config of the export stage."""

from __future__ import annotations

from typing import Literal

from agentmill.configbase import Component


class ExportConfig(Component):
    """One export of the kept trajectories, written to `export/<path>` in the run folder."""

    format: Literal["trl-sft", "trl-dpo", "sharegpt", "react", "trajectory"] = "trl-sft"
    path: str = "sft.jsonl"
    include_reasoning: bool = False  # as `reasoning_content` on assistant turns
