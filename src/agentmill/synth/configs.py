"""Config of the `synth` source: a generator model writes tasks, agentmill keeps the checked.

sources:
  - type: synth
    kind: tools                 # tools: from tool schemas; docs: multi-hop from a corpus
    tools: agentmill.synth.toolset   # JSON file of OpenAI tool schemas, a .py file or a module
    n: 50                       # candidates to generate (growing it tops a run up)
    generator: generator        # a key of `backends`
    judge: judge                # optional: the semantic / support check

The generator, solver and judge are named backends of the run config; `agentmill synth`
builds the same model from its options (docs/synth.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from agentmill.configbase import ADDITIVE, NO_FP, Component
from agentmill.records import SamplingParams

ToolKind = Literal["single", "parallel", "multi_step", "no_tool", "ask"]
ALL_TOOL_KINDS: list[ToolKind] = ["single", "parallel", "multi_step", "no_tool", "ask"]
BUNDLED_TOOLS = "agentmill.synth.toolset"


def _generator_params() -> SamplingParams:
    return SamplingParams(temperature=0.8, max_tokens=384)


class SynthSourceConfig(Component):
    """Tasks written by a generator model and kept only when they pass every check."""

    type: Literal["synth"] = "synth"
    kind: Literal["tools", "docs"]
    # kind tools: a JSON file of tool schemas, a .py file, or an importable module name
    tools: str = BUNDLED_TOOLS
    # kind docs: a folder of .txt/.md files or a JSONL corpus; None: the bundled corpus
    corpus: Path | None = None
    n: int = Field(default=20, ge=1, json_schema_extra=ADDITIVE)
    generator: str = "generator"
    solver: str | None = None  # docs: the agent that must reach the answer; None: generator
    judge: str | None = None  # the semantic check (tools) / support check (docs)
    params: SamplingParams = Field(default_factory=_generator_params)
    max_concurrency: int = Field(default=8, ge=1, json_schema_extra=NO_FP)
    # auto: local and native-protocol generators answer through a forced `submit` tool call
    # (JSON valid by construction); never: always read JSON from the reply's text
    structured: Literal["auto", "never"] = "auto"
    dedup: bool = True  # exact + near-duplicate questions are dropped (curation dedup)
    dedup_threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    # ---- tools
    tool_kinds: list[ToolKind] = Field(default_factory=lambda: list(ALL_TOOL_KINDS), min_length=1)
    execute: bool = True  # call the executable tools; a call that fails drops the candidate
    grounded: bool = True  # string arguments of first-step calls must occur in the query
    # ---- docs
    min_hops: int = Field(default=2, ge=1, le=4)
    max_hops: int = Field(default=3, ge=1, le=4)
    doc_chars: int = Field(default=700, ge=100)  # each document shown to the generator, cut
    solver_k: int = Field(default=2, ge=1)  # solver samples; kept when >= 1 reaches the answer
    solver_max_steps: int = Field(default=4, ge=1)
    solver_params: SamplingParams = Field(
        default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=256)
    )
    no_tool_check: bool = True  # a no-tool answer that is right marks the task too easy
    too_easy: Literal["keep", "drop"] = "keep"
    evolve_rounds: int = Field(default=0, ge=0, le=5)
    # bound by RunConfig (backends, cache, seed); set by `agentmill synth` the same way
    _context: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _hops(self) -> SynthSourceConfig:
        if self.min_hops > self.max_hops:
            raise ValueError(f"min_hops {self.min_hops} is above max_hops {self.max_hops}")
        return self

    def backend_names(self) -> list[tuple[str, str]]:
        """(option, backend name) of every backend this source calls."""
        names = [("generator", self.generator)]
        if self.kind == "docs":
            names.append(("solver", self.solver or self.generator))
        if self.judge:
            names.append(("judge", self.judge))
        return names

    def bind(
        self,
        backends: dict[str, Any],
        seed: int = 0,
        cache: bool = True,
        cache_path: Path | None = None,
    ) -> None:
        """Attach the run's backend configs, seed and response cache (not part of the config)."""
        used = {name: backends[name] for _, name in self.backend_names()}
        self._context = {"backends": used, "seed": seed, "cache": cache, "cache_path": cache_path}

    def run_context(self, call_log: Any = None, no_cache: bool = False) -> None:
        """Inside a run: log model calls to its calls.jsonl; `--no-cache` turns the cache off."""
        self._context["call_log"] = call_log
        if no_cache:
            self._context["cache"] = False


def check_backends(src: SynthSourceConfig, backends: dict[str, Any], where: str) -> None:
    """Refuse a synth source naming a backend that is not defined."""
    for option, name in src.backend_names():
        if name not in backends:
            have = ", ".join(sorted(backends)) or "none"
            raise ValueError(
                f"{where}.{option} '{name}' is not defined in backends (defined: {have}); "
                f"add backends.{name} or change {where}.{option}"
            )
