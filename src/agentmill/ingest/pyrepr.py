"""Parse the Python `repr()` strings that agentscope writes into its spans, without `eval`.

agentscope 1.x stores messages and tool responses as reprs: `Msg(id='a1', name='user',
content='What is 17*23?', role='user', ...)`, `ToolResponse(content=[{'type': 'text', 'text':
'391'}], metadata=None, ...)`; agentscope 2.0.0-2.0.10 stores pydantic reprs with nested
calls and enum members (`ToolResponse(content=[TextBlock(type='text', text='391')],
state=<ToolResultState.SUCCESS: 'success'>)`). The string is parsed with `ast` (never
evaluated) and every literal is read with `ast.literal_eval`, so content holding quotes,
brackets, newlines or any unicode comes back exactly. A call becomes a `ReprCall`: a dict of
its keyword arguments that also remembers the class name and any positional arguments.

>>> m = parse_repr("Msg(id='a1', name='user', content='It\\\\'s [1, 2]\\\\n', role='user')")
>>> m.type_name, m["content"], m["role"]
('Msg', "It's [1, 2]\\n", 'user')
>>> parse_repr("ToolResponse(state=<ToolResultState.ERROR: 'error'>)")["state"]
'error'
>>> parse_repr("Msg(id='a1'") is None
True
"""

from __future__ import annotations

import ast
import io
import tokenize
from typing import Any


class ReprCall(dict):  # type: ignore[type-arg]
    """A parsed `Name(k=v, ...)` call: its keywords as dict items, plus `type_name` (the
    called name, dotted if it was an attribute) and `args` (positional arguments)."""

    __slots__ = ("type_name", "args")

    def __init__(self, type_name: str, kwargs: dict[str, Any], args: tuple[Any, ...] = ()):
        super().__init__(kwargs)
        self.type_name = type_name
        self.args = args


class _Unparseable(Exception):
    pass


def parse_repr(text: str) -> Any:
    """The value a repr string denotes (calls as `ReprCall`, literals as Python values), or
    None when the text is not a repr this module can read."""
    if not isinstance(text, str):
        return None
    tree = _parse(text)
    if tree is None and "<" in text:
        tree = _parse(_strip_enum_reprs(text))
    if tree is None:
        return None
    try:
        return _value(tree.body)
    except _Unparseable:
        return None


def _parse(text: str) -> ast.Expression | None:
    try:
        return ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Call):
        return _call(node)
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [_value(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _Unparseable("dict unpacking")
        try:
            return {_value(k): _value(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
        except TypeError as e:  # an unhashable key
            raise _Unparseable(str(e)) from None
    if isinstance(node, ast.Attribute | ast.Name) and not _is_literal_name(node):
        return _dotted(node)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise _Unparseable(str(e)) from None


def _call(node: ast.Call) -> ReprCall:
    if any(k.arg is None for k in node.keywords):
        raise _Unparseable("**kwargs in a repr")
    kwargs = {k.arg: _value(k.value) for k in node.keywords}  # type: ignore[misc]
    args = tuple(_value(a) for a in node.args)
    return ReprCall(_dotted(node.func), kwargs, args)


def _is_literal_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in ("None", "True", "False")


def _dotted(node: ast.AST) -> str:
    """`datetime.datetime` -> 'datetime.datetime'; anything else is not a plain name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _Unparseable("call of a non-name")


def _strip_enum_reprs(text: str) -> str:
    """Replace enum member reprs `<Cls.NAME: value>` by their value, token by token (a `<`
    inside a string literal is one STRING token and is never touched)."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    out: list[tuple[int, str]] = []
    i = 0
    while i < len(tokens):
        end = _enum_end(tokens, i)
        if end is None:
            out.append((tokens[i].type, tokens[i].string))
            i += 1
        else:
            out.append((tokens[end - 2].type, tokens[end - 2].string))
            i = end
    return tokenize.untokenize(out)


def _enum_end(tokens: list[tokenize.TokenInfo], i: int) -> int | None:
    """If tokens[i:] start with `< NAME (. NAME)* : LITERAL >`, the index just past `>`."""
    if tokens[i].string != "<" or i + 1 >= len(tokens) or tokens[i + 1].type != tokenize.NAME:
        return None
    j = i + 2
    while j + 1 < len(tokens) and tokens[j].string == "." and tokens[j + 1].type == tokenize.NAME:
        j += 2
    if j + 2 >= len(tokens) or tokens[j].string != ":":
        return None
    literal_ok = tokens[j + 1].type in (tokenize.STRING, tokenize.NUMBER)
    return j + 3 if literal_ok and tokens[j + 2].string == ">" else None
