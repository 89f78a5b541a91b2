"""Run configuration: one pydantic model per component, composed into `RunConfig`.

Loaded from YAML with `-c key.path=value` overrides (or `-c more.yaml` to merge a file).
Unknown keys and bad values are refused with one line naming the key and what is allowed.

Fields that do not change what a run produces (concurrency, timeouts, endpoints) carry
`json_schema_extra={"fingerprint": False}`; fields whose growth only adds work (`n`,
`limit`) carry `{"additive": True}`. `fingerprint_view` uses both to tell a config change
that must be refused from one that only tops a run up.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from agentmill.configbase import ADDITIVE, NO_FP, Component
from agentmill.curation.configs import FilterConfig
from agentmill.curation.dedup_config import BalanceConfig, DecontamConfig, DedupConfig
from agentmill.export.configs import ExportConfig
from agentmill.records import Message, SamplingParams, content_hash
from agentmill.rollout.configs import AgentConfig, ToolConfig
from agentmill.scoring.configs import ScoreConfig
from agentmill.scoring.judge_config import JudgeConfig
from agentmill.synth.configs import SynthSourceConfig, check_backends


# ---------------------------------------------------------------- backends
class OpenAIBackendConfig(Component):
    """Any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, SGLang, Ollama, hosted APIs)."""

    type: Literal["openai"] = "openai"
    base_url: str = Field(json_schema_extra=NO_FP)
    model: str
    # The NAME of the environment variable holding the key; the key itself never enters a config.
    api_key_env: str | None = Field(default=None, json_schema_extra=NO_FP)
    max_concurrency: int = Field(default=64, ge=1, json_schema_extra=NO_FP)
    timeout_s: float = Field(default=120.0, gt=0, json_schema_extra=NO_FP)
    max_retries: int = Field(default=6, ge=0, json_schema_extra=NO_FP)
    backoff_base_s: float = Field(default=0.5, gt=0, json_schema_extra=NO_FP)
    backoff_max_s: float = Field(default=30.0, gt=0, json_schema_extra=NO_FP)
    max_retry_after_s: float = Field(default=120.0, ge=0, json_schema_extra=NO_FP)
    rpm: float | None = Field(default=None, gt=0, json_schema_extra=NO_FP)
    tpm: float | None = Field(default=None, gt=0, json_schema_extra=NO_FP)
    headers: dict[str, str] = Field(default_factory=dict, json_schema_extra=NO_FP)
    # Extra request fields passed through as is, e.g. {"chat_template_kwargs": {...}} for vLLM.
    extra_body: dict[str, Any] = Field(default_factory=dict)
    # native: send `tools`, read `tool_calls` (vLLM/SGLang with a tool parser, hosted APIs).
    # text: tools reach the model through agentmill's text protocol (<tool_call> blocks).
    tool_protocol: Literal["native", "text"] = "native"

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https:// (e.g. http://localhost:8000/v1)")
        return v.rstrip("/")

    @field_validator("headers")
    @classmethod
    def _no_auth_header(cls, v: dict[str, str]) -> dict[str, str]:
        if any(k.lower() in ("authorization", "api-key", "x-api-key") for k in v):
            raise ValueError("put the key in an environment variable and name it in api_key_env")
        return v


class LocalBackendConfig(Component):
    """An in-process transformers model: the embedded `smollm2-135m` or any local HF folder."""

    type: Literal["local"] = "local"
    model: str = "smollm2-135m"
    max_batch_size: int = Field(default=16, ge=1, json_schema_extra=NO_FP)
    batch_wait_ms: float = Field(default=5.0, ge=0, json_schema_extra=NO_FP)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = Field(default="cpu", json_schema_extra=NO_FP)
    threads: int | None = Field(default=None, ge=1, json_schema_extra=NO_FP)
    # MiB for finished requests' keys and values, so an agent's next step (the same
    # conversation, longer) encodes only its new tokens; 0 turns it off (backends/row_cache.py).
    kv_reuse_mb: int = Field(default=2048, ge=0, json_schema_extra=NO_FP)


class ScriptedBackendConfig(Component):
    """A deterministic fake for unit tests of control flow. Never a stand-in for a model."""

    type: Literal["scripted"] = "scripted"
    model: str = "scripted"
    replies: list[str | dict[str, Any]] = Field(default_factory=lambda: ["ok"])
    delay_s: float = Field(default=0.0, ge=0, json_schema_extra=NO_FP)
    max_concurrency: int = Field(default=64, ge=1, json_schema_extra=NO_FP)


BackendConfig = Annotated[
    OpenAIBackendConfig | LocalBackendConfig | ScriptedBackendConfig, Field(discriminator="type")
]


# ---------------------------------------------------------------- sources
class FieldMap(Component):
    """Which of the user's columns hold each task field. Unset fields are auto-detected."""

    prompt: str | None = None
    messages: str | None = None
    ground_truth: str | None = None
    system: str | None = None
    tools: str | None = None
    id: str | None = None


class FileSourceConfig(Component):
    """Tasks from a JSONL file, a parquet file, or a local HF dataset folder."""

    type: Literal["file"] = "file"
    path: Path
    format: Literal["auto", "jsonl", "parquet", "hf"] = "auto"
    split: str | None = None
    field_map: FieldMap = Field(default_factory=FieldMap)
    system_prompt: str | None = None
    limit: int | None = Field(default=None, ge=1, json_schema_extra=ADDITIVE)


class TraceSourceConfig(Component):
    """Trajectories from real agent traces (a feedback run): the production agent already ran,
    so nothing is sampled. Each trace becomes a trajectory of the rollout stage and its
    query/answer a task of the source stage (see sources/traces.py)."""

    type: Literal["traces"] = "traces"
    format: Literal["agentscope-studio", "otel", "chat-logs", "mini-swe"]
    path: Path
    projects: list[str] = Field(default_factory=list)  # Studio run_table.project
    runs: list[str] = Field(default_factory=list)  # run / conversation ids
    since: datetime | None = None  # turns starting at or after (UTC when no zone is given)
    until: datetime | None = None
    logs: Path | None = None  # OTLP logs joined to the spans (event-based GenAI content)
    redact: bool = True  # mask secrets and personal data before anything is stored
    redact_patterns: list[str] = Field(default_factory=list)  # extra regexes to mask
    limit: int | None = Field(default=None, ge=1, json_schema_extra=ADDITIVE)

    @model_validator(mode="after")
    def _options_apply(self) -> TraceSourceConfig:
        from agentmill.ingest.driver import OPTION_FORMATS

        flags = {"projects": "--project", "runs": "--run", "since": "--since"}
        flags |= {"until": "--until", "logs": "--logs"}
        for name, flag in flags.items():
            formats = OPTION_FORMATS[flag]
            if getattr(self, name) and self.format not in formats:
                raise ValueError(
                    f"{name} does not apply to format {self.format} (only to "
                    f"{', '.join(formats)}); remove it"
                )
        return self


def _source_type(v: Any) -> str:
    return (v.get("type") or "file") if isinstance(v, dict) else getattr(v, "type", "file")


# `type` defaults to "file"; synth: tasks a generator model writes (synth/configs.py).
SourceConfig = Annotated[
    Annotated[FileSourceConfig, Tag("file")]
    | Annotated[TraceSourceConfig, Tag("traces")]
    | Annotated[SynthSourceConfig, Tag("synth")],
    Discriminator(_source_type),
]


# ---------------------------------------------------------------- stages
class RolloutConfig(Component):
    """Run the agent loop `n` times per task with a named backend and the configured tools.
    With no tools, each trajectory is one completion."""

    backend: str = "teacher"
    n: int = Field(default=1, ge=1, json_schema_extra=ADDITIVE)
    params: SamplingParams = Field(default_factory=SamplingParams)
    system_prompt: str | None = None
    # Worked example turns shown after the system prompt. They steer sampling but are not
    # part of the recorded trajectory, so exports train on the plain prompt.
    few_shot: list[Message] = Field(default_factory=list)
    tools: list[ToolConfig] = Field(default_factory=list)
    agent: AgentConfig = Field(default_factory=AgentConfig)

    @field_validator("tools", mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        """`tools: [calculator]` is short for `[{type: calculator}]`."""
        return [{"type": t} if isinstance(t, str) else t for t in v] if isinstance(v, list) else v


class CacheConfig(Component):
    enabled: bool = Field(default=True, json_schema_extra=NO_FP)
    path: Path | None = Field(default=None, json_schema_extra=NO_FP)


class TasksOutConfig(Component):
    """The tasks of the kept trajectories, appended to `path` (only new `qa_hash`es), each with
    its train/validation `split`. `path` is absolute, relative to the working directory, or
    inside the run folder when it starts with `{run}/`. `astuner` writes astuner's task lines
    (main_query, init_messages, task_id, env_type, metadata{answer, qa_hash}, split) and an
    agentmill task file beside them (`<stem>.agentmill.jsonl`)."""

    path: str
    format: Literal["agentmill", "astuner"] = "agentmill"
    val_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    env_type: str = "tracing"  # astuner's `env_type` field


class RunConfig(Component):
    """The root config of `agentmill run`."""

    name: str = Field(default="run", json_schema_extra=NO_FP)
    seed: int = 0
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    sources: list[SourceConfig] = Field(min_length=1)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    # Later stages have their own fingerprints (a changed reward re-scores, never re-samples).
    score: ScoreConfig = Field(default_factory=ScoreConfig, json_schema_extra=NO_FP)
    filter: FilterConfig | None = Field(default=None, json_schema_extra=NO_FP)
    # Run folders whose kept records (`<run>/filter/records.jsonl`, scored by that run) join
    # this run's scored records before the filter, judge and curation: a flywheel round keeps
    # what earlier rounds verified (`accumulate`, flywheel.py). Not re-sampled or re-scored.
    carry: list[Path] = Field(default_factory=list, json_schema_extra=NO_FP)
    # Curation after filter (and judge), in this order; each has its own fingerprint.
    dedup: DedupConfig | None = Field(default=None, json_schema_extra=NO_FP)
    decontaminate: DecontamConfig | None = Field(default=None, json_schema_extra=NO_FP)
    balance: BalanceConfig | None = Field(default=None, json_schema_extra=NO_FP)
    export: list[ExportConfig] = Field(default_factory=list, json_schema_extra=NO_FP)
    # The LLM judge runs after filter; its verdicts are stored per trajectory (own fingerprint).
    judge: JudgeConfig | None = Field(default=None, json_schema_extra=NO_FP)
    tasks_out: TasksOutConfig | None = Field(default=None, json_schema_extra=NO_FP)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    strict: bool = Field(default=False, json_schema_extra=NO_FP)
    report: bool = Field(default=True, json_schema_extra=NO_FP)  # report.html at the end
    max_bad_fraction: float | None = Field(default=None, ge=0, le=1, json_schema_extra=NO_FP)

    @model_validator(mode="after")
    def _backends_exist(self) -> RunConfig:
        wanted = [("rollout", self.rollout.backend)] if self.needs_rollout() else []
        wanted += [("judge", self.judge.backend)] if self.judge is not None else []
        for key, name in wanted:
            if name not in self.backends:
                have = ", ".join(sorted(self.backends)) or "none"
                raise ValueError(
                    f"{key}.backend '{name}' is not defined in backends "
                    f"(defined: {have}); add backends.{name} or change {key}.backend"
                )
        return self

    @model_validator(mode="after")
    def _bind_synth(self) -> RunConfig:
        """Synth sources call named backends of this config (generator, solver, judge)."""
        for i, src in enumerate(self.sources):
            if src.type == "synth":
                check_backends(src, self.backends, f"sources.{i}")
                src.bind(self.backends, self.seed, self.cache.enabled, self.cache.path)
        return self

    @model_validator(mode="after")
    def _verl_tool_class(self) -> RunConfig:
        """Refuse before any rollout what the verl export would refuse after it."""
        for i, ex in enumerate(self.export):
            if ex.format == "verl" and not ex.tool_class and self.rollout.tools:
                raise ValueError(
                    f"export.{i}.tool_class: the agent has tools, so the verl export needs the "
                    "module.Class of the verl tool that runs them; set export[].tool_class"
                )
        return self

    def needs_rollout(self) -> bool:
        """False when every source is a trace source: the production agent already ran."""
        return any(s.type != "traces" for s in self.sources)

    def used_backends(self) -> dict[str, Any]:
        if not self.needs_rollout():
            return {}
        names = [self.rollout.backend]
        names += [n for s in self.sources if s.type == "synth" for _, n in s.backend_names()]
        return {name: self.backends[name] for name in names}


# ---------------------------------------------------------------- fingerprints
def config_view(value: Any, keep: str) -> Any:
    """The part of a config that matters for `keep`: "fingerprint" (everything that changes
    outputs) or "additive" (only the fields whose growth adds work, in their nesting)."""
    if isinstance(value, BaseModel):
        out = {}
        for name, field in type(value).model_fields.items():
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            if extra.get("fingerprint") is False:
                continue
            additive = bool(extra.get("additive"))
            if keep == "fingerprint" and additive:
                continue
            sub = getattr(value, name)
            if keep == "additive" and additive:
                out[name] = sub
                continue
            sub = config_view(sub, keep)
            if keep == "fingerprint" or sub not in ({}, [], None):
                out[name] = sub
        return out
    if isinstance(value, dict):
        items = {k: config_view(v, keep) for k, v in value.items()}
        return {k: v for k, v in items.items() if keep == "fingerprint" or v not in ({}, [], None)}
    if isinstance(value, list | tuple):
        items = [config_view(v, keep) for v in value]
        if keep == "additive" and all(v in ({}, [], None) for v in items):
            return []
        return items
    if keep == "additive":
        return None
    if isinstance(value, datetime):  # as the manifest's JSON holds it, so a resume compares equal
        return value.isoformat()
    return str(value) if isinstance(value, Path) else value


def fingerprint_view(cfg: RunConfig) -> dict[str, Any]:
    """Everything in the config that changes what the run produces (backends in use only)."""
    view = config_view(cfg, "fingerprint")
    view["backends"] = {k: config_view(v, "fingerprint") for k, v in cfg.used_backends().items()}
    if not cfg.needs_rollout():  # trace sources only: nothing is sampled
        view.pop("rollout", None)
    return view


def additive_view(cfg: RunConfig) -> dict[str, Any]:
    """The settings whose growth only adds work (e.g. rollout.n, sources[i].limit)."""
    return config_view(cfg, "additive")


def fingerprint(cfg: RunConfig) -> str:
    return content_hash(fingerprint_view(cfg))
