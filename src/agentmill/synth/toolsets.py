"""Tool sets for `synth tools`: loading them, and validating a call against its schema.

TOOLS is a JSON file of OpenAI tool schemas (a list or `{"tools": [...]}`; a bare
`{name, parameters}` is accepted), a `.py` file, or an importable module whose public
functions become tools the way the `function` tool makes them. A malformed file is a
`UserError` (one line, exit 2).

>>> tools = load_tools("agentmill.synth.toolset")
>>> format_problem([ExpectedCall(name="get_weather", arguments={"city": 3})], tools)[0]
'wrong_type'
>>> format_problem([ExpectedCall(name="get_weather", arguments={})], tools)[0]
'missing_required'
>>> format_problem([ExpectedCall(name="fly", arguments={})], tools)[0]
'unknown_tool'
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from agentmill.errors import UserError
from agentmill.records import ExpectedCall


@dataclass
class ToolSet:
    """The tools' schemas by name, and the callable tool where there is one."""

    schemas: dict[str, dict[str, Any]]
    callables: dict[str, Any]

    def schema_list(self) -> list[dict[str, Any]]:
        return list(self.schemas.values())


def load_tools(spec: str) -> ToolSet:
    """A JSON file of OpenAI tool schemas, a `.py` file, or an importable module name."""
    if spec.endswith(".json"):
        return _json_tools(Path(spec))
    if spec.endswith(".py"):
        return _module_tools(_module_from_file(Path(spec)))
    try:
        module = importlib.import_module(spec)
    except ImportError as e:
        raise UserError(
            f"tools {spec!r}: not a .json/.py file and not an importable module ({e})"
        ) from None
    return _module_tools(module)


def _module_from_file(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"tools file not found: {path}; pass a .json or .py file or a module")
    spec = importlib.util.spec_from_file_location(f"agentmill_synth_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as e:  # the user's module: any import-time error is bad input
        raise UserError(f"tools file {path}: cannot import it ({type(e).__name__}: {e})") from None
    return module


def _module_tools(module: Any) -> ToolSet:
    """Every public function defined in `module` becomes a tool (the `function` tool's code)."""
    from agentmill.rollout.tools.function import FunctionTool

    fns = [
        fn
        for name, fn in inspect.getmembers(module, inspect.isfunction)
        if not name.startswith("_") and fn.__module__ == module.__name__
    ]
    if not fns:
        raise UserError(f"tools module {module.__name__!r} defines no public functions")
    tools = [FunctionTool(fn) for fn in fns]
    return ToolSet({t.name: t.schema() for t in tools}, {t.name: t for t in tools})


def _json_tools(path: Path) -> ToolSet:
    if not path.is_file():
        raise UserError(f"tools file not found: {path}; pass a JSON file of tool schemas")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise UserError(f"tools file {path}: not valid JSON ({e}); fix the file") from None
    items = data.get("tools") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise UserError(f"tools file {path}: expected a non-empty JSON list of tool schemas")
    schemas = [_normalize_schema(t, f"{path}[{i}]") for i, t in enumerate(items)]
    return ToolSet({s["function"]["name"]: s for s in schemas}, {})


def _normalize_schema(item: Any, where: str) -> dict[str, Any]:
    """`{type: function, function: {name, description, parameters}}`, checked."""
    if isinstance(item, dict) and "function" not in item and "name" in item:
        item = {"type": "function", "function": item}
    fn = item.get("function") if isinstance(item, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise UserError(f"{where}: a tool needs {{type: function, function: {{name, parameters}}}}")
    params = fn.setdefault("parameters", {"type": "object", "properties": {}})
    try:
        jsonschema.Draft202012Validator.check_schema(params)
    except jsonschema.SchemaError as e:
        raise UserError(
            f"{where}: parameters of {fn['name']} is not a valid JSON schema ({e.message})"
        ) from None
    return {"type": "function", "function": fn}


_ERROR_REASONS = {
    "required": "missing_required",
    "type": "wrong_type",
    "additionalProperties": "unknown_argument",
    "enum": "bad_value",
}


def format_problem(calls: list[ExpectedCall], tools: ToolSet) -> tuple[str, str] | None:
    """(reason, detail) for the first call that names an unknown tool or breaks its schema."""
    for c in calls:
        schema = tools.schemas.get(c.name)
        if schema is None:
            return "unknown_tool", f"{c.name!r} is not one of {', '.join(tools.schemas)}"
        validator = jsonschema.Draft202012Validator(schema["function"]["parameters"])
        errors = sorted(validator.iter_errors(c.arguments), key=lambda e: list(e.path))
        if errors:
            e = errors[0]
            where = "/".join(str(p) for p in e.path)
            detail = f"{c.name}: {where}: {e.message}" if where else f"{c.name}: {e.message}"
            return _ERROR_REASONS.get(str(e.validator), "invalid_arguments"), detail
    return None
