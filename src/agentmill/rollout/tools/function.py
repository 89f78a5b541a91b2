"""The `function` tool: any Python function becomes a tool, its schema read from the signature.

`path` is `package.module:function` (also `module:Class.method`) or `package.module.function`.
Type hints give the JSON types: `str`, `int`, `float`, `bool`, `list[...]`, `tuple[...]`,
`dict[str, ...]`, `Literal[...]` and `Enum` (as `enum`), `X | None` (nullable), `Annotated[X,
"description"]`; parameters with a default are optional. The docstring's first paragraph is the
tool's description, and Google-style `Args:` entries or reST `:param name:` lines describe the
parameters. Arguments are validated against the schema before the call; sync functions run in a
worker thread, async ones are awaited; a `str` result is the observation as is, anything else is
shown as JSON.

    >>> def area(width: float, unit: Literal["m", "ft"] = "m") -> str:
    ...     '''Area of a square.
    ...
    ...     Args:
    ...         width: side length
    ...         unit: length unit
    ...     '''
    ...     return f"{width * width} {unit}^2"
    >>> params = tool_schema(area)["function"]["parameters"]
    >>> params["required"], params["properties"]["width"]
    (['width'], {'type': 'number', 'description': 'side length'})
    >>> params["properties"]["unit"]["enum"], params["properties"]["unit"]["default"]
    (['m', 'ft'], 'm')
    >>> asyncio.run(FunctionTool(area).call({"width": 3}))
    '9 m^2'
"""

from __future__ import annotations

import asyncio
import collections.abc
import enum
import importlib
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

import jsonschema
import orjson

from agentmill.errors import UserError
from agentmill.rollout.configs import FunctionToolConfig
from agentmill.rollout.tools import ToolError

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = (list, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_OBJECTS = (dict, collections.abc.Mapping)
_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Params)\s*:\s*$")
_ENTRY = re.compile(r"^\s*\**(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_REST = re.compile(r"^\s*:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


class FunctionTool:
    """A Python callable behind the Tool protocol."""

    def __init__(self, fn: Callable[..., Any], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "")
        if not _NAME.match(self.name):
            raise UserError(f"tool name {self.name!r} is not valid; set `name` to letters, _, -")
        try:
            self._schema = tool_schema(fn, self.name)
        except (ValueError, TypeError) as exc:
            raise UserError(
                f"cannot read the signature of {self.name} ({exc}); wrap it in a typed function"
            ) from None
        self._validator = jsonschema.Draft202012Validator(self._schema["function"]["parameters"])
        self._enums = _enum_parameters(fn)
        parameters = inspect.signature(fn).parameters.values()
        self._positional = [p.name for p in parameters if p.kind is p.POSITIONAL_ONLY]

    def schema(self) -> dict[str, Any]:
        return self._schema

    async def call(self, arguments: dict[str, Any]) -> str:
        problems = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if problems:
            raise ToolError("invalid arguments: " + "; ".join(_describe(e) for e in problems))
        kwargs = {k: self._member(k, v) for k, v in arguments.items()}
        args = [kwargs.pop(name) for name in self._positional if name in kwargs]
        if _is_async(self.fn):
            result = await self.fn(*args, **kwargs)
        else:  # a worker thread keeps a slow sync function from stalling other rollouts
            result = await asyncio.to_thread(self.fn, *args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return render(result)

    def _member(self, name: str, value: Any) -> Any:
        return self._enums[name](value) if name in self._enums and value is not None else value


def _is_async(fn: Callable[..., Any]) -> bool:
    """Async functions, and objects whose `__call__` is async."""
    call = type(fn).__call__  # an instance with `async def __call__` is async too
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def build(cfg: FunctionToolConfig) -> list[FunctionTool]:
    """The tool for `cfg.path`, named `cfg.name` or after the function."""
    return [FunctionTool(load_function(cfg.path), cfg.name)]


def load_function(path: str) -> Callable[..., Any]:
    """Import `module:attr` or `module.attr`; a one-line `UserError` names what is missing."""
    module_name, colon, attr = path.partition(":")
    if not colon:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UserError(f"function path {path!r} must look like package.module:function")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(
            f"cannot import module {module_name!r} for function tool {path!r} ({exc}); "
            "check `path` and that the module is installed"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"module {module_name!r} has no attribute {attr!r}; check `path`")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"{path!r} is a {type(obj).__name__}, not a function; fix `path`")
    return obj


def tool_schema(fn: Callable[..., Any], name: str | None = None) -> dict[str, Any]:
    """The OpenAI tool schema of `fn`, from its type hints and docstring."""
    description, documented = parse_docstring(inspect.getdoc(fn) or "")
    hints = _hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    signature = inspect.signature(fn)
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = type_schema(hints.get(param.name, Any))
        if param.name in documented:
            schema.setdefault("description", documented[param.name])
        if param.default is param.empty:
            required.append(param.name)
        elif _is_json(default := _plain(param.default)):
            schema = _nullable(schema) if default is None else schema
            schema["default"] = default
        properties[param.name] = schema
    open_ended = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    parameters = {"type": "object", "properties": properties, "required": required}
    parameters["additionalProperties"] = open_ended
    name = name or getattr(fn, "__name__", type(fn).__name__)
    function = {
        "name": name,
        "description": description or f"Call {name}.",
        "parameters": parameters,
    }
    return {"type": "function", "function": function}


def type_schema(tp: Any) -> dict[str, Any]:
    """The JSON schema of one type hint (`{}` accepts anything).

    >>> type_schema(list[int]), type_schema(int | None)
    ({'type': 'array', 'items': {'type': 'integer'}}, {'type': ['integer', 'null']})
    """
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        notes = [a for a in args[1:] if isinstance(a, str)]
        return type_schema(args[0]) | ({"description": notes[0]} if notes else {})
    if origin in (Union, types.UnionType):
        return _union(args)
    if origin is Literal:
        return _enum(list(args))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _enum([member.value for member in tp])
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is type(None) or tp is None:
        return {"type": "null"}
    return _container(tp, origin, args)


def _container(tp: Any, origin: Any, args: tuple[Any, ...]) -> dict[str, Any]:
    if tp is tuple or origin is tuple:
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return _array(args[:1])
        items = [type_schema(a) for a in args]
        return {"type": "array", "prefixItems": items, "minItems": len(args), "maxItems": len(args)}
    if tp in _ARRAYS or origin in _ARRAYS:
        return _array(args)
    if tp in _OBJECTS or origin in _OBJECTS:
        values = type_schema(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": values or True}
    return {}


def _array(args: tuple[Any, ...]) -> dict[str, Any]:
    items = type_schema(args[0]) if args else {}
    return {"type": "array", "items": items} if items else {"type": "array"}


def _union(args: tuple[Any, ...]) -> dict[str, Any]:
    options = [a for a in args if a is not type(None)]
    inner = type_schema(options[0]) if len(options) == 1 else {}
    if len(options) > 1:
        inner = {"anyOf": [type_schema(a) for a in options]}
    return inner if len(options) == len(args) else _nullable(inner)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind is None and not schema:
        return schema  # already accepts anything
    if isinstance(kind, list):
        return schema | {"type": [*kind, "null"]} if "null" not in kind else schema
    if isinstance(kind, str) and "enum" not in schema:
        return schema | {"type": [kind, "null"]}
    return {"anyOf": [schema, {"type": "null"}]}


def _enum(values: list[Any]) -> dict[str, Any]:
    kinds = {_SCALARS.get(type(v)) for v in values}
    return ({"type": kinds.pop()} if len(kinds) == 1 and None not in kinds else {}) | {
        "enum": values
    }


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, {parameter: description}) from Google `Args:` or reST `:param:`.

    >>> parse_docstring("Add two numbers.\\n\\n:param a: the first\\n:param int b: the second")
    ('Add two numbers.', {'a': 'the first', 'b': 'the second'})
    """
    first = doc.strip().split("\n\n", 1)[0]
    lines = first.splitlines()
    description = "" if lines and (_SECTION.match(lines[0]) or _REST.match(lines[0])) else first
    params = _google_params(doc.splitlines()) | _rest_params(doc.splitlines())
    return " ".join(description.split()), params


def _google_params(lines: list[str]) -> dict[str, str]:
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return {}
    base, entry_indent, params, current = _indent(lines[start]), None, {}, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        if _indent(line) <= base:
            break  # the next section (Returns:, Raises:, ...)
        match = _ENTRY.match(line)
        if match and entry_indent in (None, _indent(line)):
            entry_indent, current = _indent(line), match.group(1)
            params[current] = match.group(2).strip()
        elif current:
            params[current] = f"{params[current]} {line.strip()}".strip()
    return params


def _rest_params(lines: list[str]) -> dict[str, str]:
    params, current = {}, None
    for line in lines:
        match = _REST.match(line)
        if match:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current and line.strip() and not line.strip().startswith(":"):
            params[current] = f"{params[current]} {line.strip()}"
        else:
            current = None
    return params


def render(result: Any) -> str:
    """The observation for a function's return value: text as is, anything else as JSON."""
    if isinstance(result, str):
        return result
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
    return orjson.dumps(result, default=_fallback, option=options).decode()


def _fallback(value: Any) -> Any:
    if hasattr(value, "model_dump"):  # pydantic models
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to what is there
        return dict(getattr(fn, "__annotations__", {}))


def _enum_parameters(fn: Callable[..., Any]) -> dict[str, type[enum.Enum]]:
    """Parameters typed with an Enum get the member, not the raw JSON value."""
    found = {}
    for name, tp in _hints(fn).items():
        options = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else ()
        for candidate in (tp, *options):
            if isinstance(candidate, type) and issubclass(candidate, enum.Enum):
                found[name] = candidate
    return {k: v for k, v in found.items() if k != "return"}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except TypeError:
        return False
    return True


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _describe(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.path)
    return f"{where}: {error.message}" if where else error.message
