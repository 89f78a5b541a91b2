"""Loading a run config: YAML files, `-c` overrides, and one-line validation errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from agentmill.astuner import from_astuner, is_astuner
from agentmill.config import (
    FileSourceConfig,
    LocalBackendConfig,
    OpenAIBackendConfig,
    RunConfig,
    ScriptedBackendConfig,
    TraceSourceConfig,
)
from agentmill.errors import UserError


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
    """Relative paths in a config file are relative to that file's folder: source files,
    a trace source's `logs`, a synth source's `corpus` and `tools` file, a search tool's
    `corpus`, the run folders in `carry`. (A synth `tools` value that is not a .json/.py file
    is a module name.)"""

    def fix(d: dict[str, Any], key: str) -> None:
        if isinstance(d.get(key), str):
            p = Path(d[key]).expanduser()
            d[key] = str(p if p.is_absolute() else (base / p).resolve())

    for src in data.get("sources") or []:
        if not isinstance(src, dict):
            continue
        for key in ("path", "logs", "corpus"):
            fix(src, key)
        if isinstance(src.get("tools"), str) and src["tools"].endswith((".json", ".py")):
            fix(src, "tools")
    if isinstance(data.get("carry"), list):
        folders = {str(i): v for i, v in enumerate(data["carry"])}
        for key in folders:
            fix(folders, key)
        data["carry"] = list(folders.values())
    rollout = data.get("rollout")
    for tool in (rollout.get("tools") or []) if isinstance(rollout, dict) else []:
        if isinstance(tool, dict):
            fix(tool, "corpus")


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


def _tagged_models() -> dict[str, type[BaseModel]]:
    """Union members by their `type` tag (backends, sources, tools, rewards)."""
    from agentmill.rollout import configs as rc
    from agentmill.scoring import configs as sc
    from agentmill.synth.configs import SynthSourceConfig

    members: list[type[BaseModel]] = [
        SynthSourceConfig,
        OpenAIBackendConfig,
        LocalBackendConfig,
        ScriptedBackendConfig,
        FileSourceConfig,
        TraceSourceConfig,
        rc.CalculatorToolConfig,
        rc.PythonToolConfig,
        rc.SearchToolConfig,
        rc.FunctionToolConfig,
        sc.MathRewardConfig,
        sc.CodeRewardConfig,
        sc.ToolCallRewardConfig,
        sc.FormatRewardConfig,
        sc.ExactRewardConfig,
        sc.ContainsRewardConfig,
        sc.RegexRewardConfig,
    ]
    return {m.model_fields["type"].default: m for m in members}


def _is_tag(loc: tuple[Any, ...], i: int) -> bool:
    """pydantic puts the union tag into error locations: `sources.0.file.path`."""
    unions = ("backends", "sources", "tools", "rewards")
    return i >= 2 and loc[i - 2] in unions and loc[i] in _tagged_models()


def _display_loc(loc: tuple[Any, ...]) -> str:
    """`backends.teacher.local.foo` -> `backends.teacher.foo`: hide union tags from users."""
    return ".".join(str(p) for i, p in enumerate(loc) if not _is_tag(loc, i))


def _model_of(annotation: Any) -> Any:
    """The pydantic model inside an annotation (`X`, `X | None`, `list[X]`, `dict[str, X]`)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(err: ValidationError, loc: tuple[Any, ...]) -> list[str]:
    model: Any = RunConfig if err.title == "RunConfig" else None
    for i, part in enumerate(loc[:-1]):
        if _is_tag(loc, i):
            model = _tagged_models()[part]
        elif isinstance(part, int) or (i >= 1 and loc[i - 1] == "backends"):
            continue  # a list index or a backend's name: the model stays that of the items
        elif model is not None:
            field = model.model_fields.get(part)
            model = _model_of(field.annotation) if field is not None else None
    return sorted(model.model_fields) if model is not None else []


def load_config(config: Path, overrides: list[str] | None = None) -> RunConfig:
    """Load, merge and validate a run config; raise `UserError` with one line on any problem."""
    data = compose(config, overrides)
    if is_astuner(data):  # astuner's feedback-training config, mapped (agentmill/astuner.py)
        data = _from_astuner(data, config)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise UserError(format_validation_error(e, f"config {config}")) from None


def _from_astuner(data: dict[str, Any], config: Path) -> dict[str, Any]:
    mapped, notes = from_astuner(data, config.parent)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return mapped


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (no secrets: configs only ever hold variable names)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
