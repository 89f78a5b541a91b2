"""Run configuration: one pydantic model per component, composed into `RunConfig`.

Loaded from YAML with `-c key.path=value` overrides (or `-c more.yaml` to merge a file).
Unknown keys and bad values are refused with one line naming the key and what is allowed.

Fields that do not change what a run produces (concurrency, timeouts, endpoints) carry
`json_schema_extra={"fingerprint": False}`; fields whose growth only adds work (`n`,
`limit`) carry `{"additive": True}`. `fingerprint_view` uses both to tell a config change
that must be refused from one that only tops a run up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from agentmill.errors import UserError
from agentmill.records import SamplingParams, content_hash

NO_FP: dict[str, Any] = {"fingerprint": False}
ADDITIVE: dict[str, Any] = {"additive": True}


class Component(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


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


def _source_type(v: Any) -> str:
    return (v.get("type") or "file") if isinstance(v, dict) else getattr(v, "type", "file")


# More source kinds (synth, traces) join this union; `type` defaults to "file".
SourceConfig = Annotated[Annotated[FileSourceConfig, Tag("file")], Discriminator(_source_type)]


# ---------------------------------------------------------------- stages
class RolloutConfig(Component):
    """Sample `n` completions per task from a named backend."""

    backend: str = "teacher"
    n: int = Field(default=1, ge=1, json_schema_extra=ADDITIVE)
    params: SamplingParams = Field(default_factory=SamplingParams)
    system_prompt: str | None = None


class CacheConfig(Component):
    enabled: bool = Field(default=True, json_schema_extra=NO_FP)
    path: Path | None = Field(default=None, json_schema_extra=NO_FP)


class RunConfig(Component):
    """The root config of `agentmill run`."""

    name: str = Field(default="run", json_schema_extra=NO_FP)
    seed: int = 0
    backends: dict[str, BackendConfig]
    sources: list[SourceConfig] = Field(min_length=1)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    strict: bool = Field(default=False, json_schema_extra=NO_FP)
    max_bad_fraction: float | None = Field(default=None, ge=0, le=1, json_schema_extra=NO_FP)

    @model_validator(mode="after")
    def _backends_exist(self) -> RunConfig:
        if self.rollout.backend not in self.backends:
            have = ", ".join(sorted(self.backends)) or "none"
            raise ValueError(
                f"rollout.backend '{self.rollout.backend}' is not defined in backends "
                f"(defined: {have}); add backends.{self.rollout.backend} or change rollout.backend"
            )
        return self

    def used_backends(self) -> dict[str, Any]:
        return {self.rollout.backend: self.backends[self.rollout.backend]}


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
    return str(value) if isinstance(value, Path) else value


def fingerprint_view(cfg: RunConfig) -> dict[str, Any]:
    """Everything in the config that changes what the run produces (backends in use only)."""
    view = config_view(cfg, "fingerprint")
    view["backends"] = {k: config_view(v, "fingerprint") for k, v in cfg.used_backends().items()}
    return view


def additive_view(cfg: RunConfig) -> dict[str, Any]:
    """The settings whose growth only adds work (e.g. rollout.n, sources[i].limit)."""
    return config_view(cfg, "additive")


def fingerprint(cfg: RunConfig) -> str:
    return content_hash(fingerprint_view(cfg))


# ---------------------------------------------------------------- loading
def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        nxt = keys[i + 1]
        if isinstance(node, list):
            node = node[int(key)]
            continue
        if key not in node or not isinstance(node[key], dict | list):
            node[key] = [] if nxt.isdigit() else {}
        node = node[key]
    last = keys[-1]
    if isinstance(node, list):
        idx = int(last)
        if idx == len(node):
            node.append(value)
        else:
            node[idx] = value
    else:
        node[last] = value


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}; pass the path of a YAML run config")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserError(
            f"config {path}{where}: not valid YAML ({getattr(e, 'problem', e)}); fix the syntax"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(
            f"config {path}: the top level must be a mapping of keys, got {type(data).__name__}"
        )
    return data


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Relative source paths in a config file are relative to that file's folder."""
    for src in data.get("sources") or []:
        if isinstance(src, dict) and isinstance(src.get("path"), str):
            p = Path(src["path"]).expanduser()
            src["path"] = str(p if p.is_absolute() else (base / p).resolve())


def compose(config: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The raw config dict: `config` merged with each `-c` override (a YAML file or key=value)."""
    data = read_yaml(config)
    _resolve_paths(data, config.parent)
    for item in overrides or []:
        if "=" not in item:
            extra = read_yaml(Path(item))
            _resolve_paths(extra, Path(item).parent)
            data = _merge(data, extra)
            continue
        key, _, raw = item.partition("=")
        if not key.strip():
            raise UserError(f"override '{item}': expected key.path=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        try:
            _set_path(data, key.strip(), value)
        except (IndexError, ValueError, TypeError):
            raise UserError(f"override '{item}': cannot set {key} in this config") from None
    return data


def format_validation_error(err: ValidationError, what: str = "config") -> str:
    """One line naming the first problem (and how many more there are)."""
    first = err.errors()[0]
    loc = _display_loc(first["loc"])
    if first["type"] == "extra_forbidden":
        msg = f"unknown key '{loc}'"
        allowed = _allowed_keys(err, first["loc"])
        if allowed:
            msg += f" (allowed here: {', '.join(allowed)})"
    elif first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tags = first.get("ctx", {}).get("expected_tags", "")
        msg = f"{loc}: missing or unknown 'type'" + (f" (one of: {tags})" if tags else "")
    else:
        got = first.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        text = first["msg"].removeprefix("Value error, ")
        msg = f"{loc}: {text[0].lower()}{text[1:]}{shown}" if loc else text
    more = len(err.errors()) - 1
    return f"{what}: {msg}" + (f" [and {more} more problem(s)]" if more else "")


_TAGS = {"openai", "local", "scripted", "file"}


def _display_loc(loc: tuple[Any, ...]) -> str:
    """`backends.teacher.local.foo` -> `backends.teacher.foo`: hide union tags from users."""
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if not (p in _TAGS and i >= 2 and loc[i - 2] in ("backends", "sources"))
    ]
    return ".".join(parts)


def _allowed_keys(err: ValidationError, loc: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig if err.title == "RunConfig" else None
    tagged = {
        "openai": OpenAIBackendConfig,
        "local": LocalBackendConfig,
        "scripted": ScriptedBackendConfig,
        "file": FileSourceConfig,
    }
    for part in loc[:-1]:
        if part in tagged:
            model = tagged[part]
            continue
        if model is None or isinstance(part, int):
            continue
        if model is RunConfig and part == "backends":
            model = "backends"
            continue
        if model == "backends":
            model = None  # a backend name; the type tag that follows picks the model
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        ann = getattr(field, "annotation", None)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        return sorted(model.model_fields)
    return []


def load_config(config: Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, merge and validate a run config; raise `UserError` with one line on any problem."""
    data = compose(config, overrides)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, f"config {config}")) from None


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (no secrets: configs only ever hold variable names)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
