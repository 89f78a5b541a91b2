"""Config of the export stage: one `ExportConfig` per file (or folder) the run writes."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agentmill.configbase import Component

ExportFormat = Literal[
    "trl-sft",
    "trl-dpo",
    "sharegpt",
    "sharegpt-ranking",
    "react",
    "trajectory",
    "trl-grpo",
    "verl",
    "verl-sft",
    "hf",
]
DEFAULT_PATHS: dict[str, str] = {
    "trl-sft": "sft.jsonl",
    "trl-dpo": "dpo.jsonl",
    "sharegpt": "sharegpt.json",
    "sharegpt-ranking": "sharegpt_ranking.json",
    "react": "react.jsonl",
    "trajectory": "trajectories.jsonl",
    "trl-grpo": "grpo.jsonl",
    "verl": "verl_rl.parquet",
    "verl-sft": "verl_sft.parquet",
    "hf": "hf",
}


class ExportConfig(Component):
    """One export of the kept trajectories (or, for `verl` / `trl-grpo`, of the run's tasks),
    written to `export/<path>` in the run folder. Options a format does not use are ignored.

    >>> ExportConfig(format="verl", tool_class="pkg.MyTool").path
    'verl_rl.parquet'
    """

    format: ExportFormat = "trl-sft"
    path: str = ""  # default: DEFAULT_PATHS[format]
    include_reasoning: bool = False  # as `reasoning_content` on assistant turns
    # train / validation: `<stem>.train<ext>` + `<stem>.validation<ext>` (hf: two splits);
    # the side is the task's `split`, else a hash of the task id (export.splits.task_split)
    split: bool = False
    val_fraction: float = Field(default=0.05, ge=0, le=1)
    prompt_completion: bool = False  # trl-sft: {prompt, completion, tools} records
    # trl-dpo / sharegpt-ranking / trajectory / hf: the reward that ranks samples and is
    # reported as final_reward (None: the mean of each sample's rewards)
    reward: str | None = None
    min_margin: float = Field(default=0.5, ge=0)
    max_pairs_per_task: int = Field(default=1, ge=1)
    simpler_mode: bool = False  # also pair equally rewarded but clearly longer samples
    simpler_min_steps: int = Field(default=2, ge=0)
    simpler_min_tokens: int = Field(default=0, ge=0)
    assistant_text: Literal["drop", "think"] = "drop"  # sharegpt: text beside a call
    react_form: Literal["prompt_completion", "text"] = "prompt_completion"
    # verl / trl-grpo: the reward compute_score applies (data_source agentmill/<type>)
    verl_reward: Literal["math", "code", "format", "exact", "contains", "regex"] = "math"
    tool_class: str | None = None  # verl: the `module.Class` of the verl tool for our tools
    license: str = "unknown"  # hf: the dataset card's licence (an HF licence id)
    save_to_disk: bool = False  # hf: also the Arrow copy `datasets.load_from_disk` reads

    @field_validator("path")
    @classmethod
    def _inside_export(cls, v: str) -> str:
        p = PurePosixPath(v)
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the run's export/ folder")
        return v

    @model_validator(mode="after")
    def _default_path(self) -> ExportConfig:
        if not self.path:
            self.path = DEFAULT_PATHS[self.format]
        return self
