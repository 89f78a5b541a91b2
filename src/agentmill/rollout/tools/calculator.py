"""The `calculator` tool: arithmetic evaluated by walking Python's AST, never with `eval`.

Accepted: numbers, `+ - * / // % **`, unary `+`/`-`, parentheses, the functions in `FUNCTIONS`
and the constants `pi`, `e`, `tau`. Spellings models often use are rewritten first: `^` means
power, `×`/`·` multiply, `÷` divides, `−` is minus, a trailing `=` is dropped, and `1,234,567`
is a thousands-separated number when the expression calls no function (inside `max(1,234)` a
comma always separates arguments, so nothing is ambiguous).

Abuse is refused with a `ToolError` before it costs anything: inputs over 1,000 characters,
nesting deeper than 50, integer results over 1,000 digits (checked before computing powers,
factorials, combinations), complex or non-finite results.

    >>> evaluate("2^10 + sqrt(16) =")
    '1028'
    >>> evaluate("1,234 × 2")
    '2468'
    >>> evaluate("max(1,234)")
    '234'
    >>> evaluate("10 / 4"), evaluate("1/3"), evaluate("round(pi, 2)")
    ('2.5', '0.333333333333', '3.14')
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Any

from agentmill.rollout.configs import CalculatorToolConfig
from agentmill.rollout.tools import ToolError

Number = int | float

MAX_CHARS = 1000
MAX_DEPTH = 50
MAX_DIGITS = 1000
_MAX_BITS = int(MAX_DIGITS * math.log2(10)) + 1

CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}
_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
_SPELLINGS = {"^": "**", "×": "*", "·": "*", "÷": "/", "−": "-", "–": "-"}
_THOUSANDS = re.compile(r"(?<![\w.,])\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\w,.])")
_CALL = re.compile(r"[A-Za-z_]\w*\s*\(")


class Calculator:
    """Evaluates one arithmetic expression per call; see the module docstring for the rules."""

    def __init__(self, cfg: CalculatorToolConfig) -> None:
        self.name = cfg.name

    def schema(self) -> dict[str, Any]:
        description = (
            "Evaluate an arithmetic expression exactly, e.g. `(3 + 4)^2 / sqrt(2)`. Operators "
            "+ - * / // % ** (or ^), parentheses; functions " + ", ".join(sorted(FUNCTIONS))
        )
        description += "; constants pi, e."
        expression = {"type": "string", "description": "the expression, e.g. 17 * 23 + 4"}
        parameters = {
            "type": "object",
            "properties": {"expression": expression},
            "required": ["expression"],
        }
        return {
            "type": "function",
            "function": {"name": self.name, "description": description, "parameters": parameters},
        }

    async def call(self, arguments: dict[str, Any]) -> str:
        expression = arguments.get("expression")
        if not isinstance(expression, str):
            raise ToolError("`expression` must be a string such as '2 * (3 + 4)'")
        return evaluate(expression)


def build(cfg: CalculatorToolConfig) -> list[Calculator]:
    """The calculator tool, named by the config."""
    return [Calculator(cfg)]


def evaluate(expression: str) -> str:
    """The formatted value of `expression`, or a `ToolError` saying what is wrong."""
    tree = _parse(normalize(expression))
    try:
        value = _eval(tree.body, 0)
    except ZeroDivisionError:
        raise ToolError("division by zero") from None
    except OverflowError:
        raise ToolError("the result is too large") from None
    return format_number(_checked(value))


def normalize(expression: str) -> str:
    """Rewrite the spellings models use into Python syntax.

    >>> normalize(" 3 ^ 2 × 1,000 = ")
    '3 ** 2 * 1000'
    """
    text = expression.strip()
    if len(text) > MAX_CHARS:
        raise ToolError(f"the expression is over {MAX_CHARS} characters; split it up")
    text = text.rstrip("=").strip()
    for spelling, python in _SPELLINGS.items():
        text = text.replace(spelling, python)
    text = re.sub(r"\bmath\.", "", text)  # `math.sqrt(2)` is a common spelling too
    if not _CALL.search(text):
        text = _THOUSANDS.sub(lambda m: m.group().replace(",", ""), text)
    return text


def format_number(value: Number) -> str:
    """Integers without `.0`, floats with up to 12 significant digits.

    >>> format_number(2.0), format_number(0.1 + 0.2), format_number(1e20), format_number(-7)
    ('2', '0.3', '1e+20', '-7')
    """
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def _parse(text: str) -> ast.Expression:
    if not text:
        raise ToolError("the expression is empty")
    try:
        return ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise ToolError(f"cannot parse {shown!r} as arithmetic") from None


def _eval(node: ast.AST, depth: int) -> Number:
    if depth > MAX_DEPTH:
        raise ToolError(f"the expression is nested deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Constant):
        return _constant(node.value)
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            raise ToolError(f"unknown name {node.id!r}; constants are pi, e and tau")
        return CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        value = _eval(node.operand, depth + 1)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        return _checked(_binary(node.op, left, right))
    if isinstance(node, ast.Call):
        return _call(node, depth)
    raise ToolError(f"unsupported syntax: {ast.unparse(node)[:60]!r}")


def _constant(value: object) -> Number:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError(f"only numbers are allowed, not {value!r}")
    return value


def _binary(op: ast.operator, left: Number, right: Number) -> Number:
    if isinstance(op, ast.Pow):
        return power(left, right)
    if type(op) not in _BINARY:
        raise ToolError(f"operator {type(op).__name__} is not supported")
    return _BINARY[type(op)](left, right)


def power(base: Number, exponent: Number) -> Number:
    """`base ** exponent`, refused when an integer result would exceed `MAX_DIGITS` digits.

    >>> power(2, 10), power(4, 0.5)
    (1024, 2.0)
    """
    whole = isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1
    if whole and exponent > 0 and exponent * math.log2(abs(base)) > _MAX_BITS:
        raise ToolError(f"the result would have more than {MAX_DIGITS} digits")
    result = base**exponent
    if isinstance(result, complex):
        raise ToolError("the result is a complex number (e.g. a fractional power of a negative)")
    return result


def _call(node: ast.Call, depth: int) -> Number:
    name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
    if name not in FUNCTIONS or node.keywords:
        raise ToolError(f"unknown function {name!r}; available: {', '.join(sorted(FUNCTIONS))}")
    args = [_eval(arg, depth + 1) for arg in node.args]
    try:
        return _checked(FUNCTIONS[name](*args))
    except (ValueError, TypeError) as exc:
        shown = ", ".join(format_number(a) for a in args)
        raise ToolError(f"{name}({shown}): {exc}") from None


def _checked(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > _MAX_BITS:
        raise ToolError(f"the result has more than {MAX_DIGITS} digits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number")
    return value


def _whole(x: Number, what: str) -> int:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if not isinstance(x, int) or x < 0:
        raise ValueError(f"{what} must be a non-negative whole number")
    return x


def _refuse_over(log_lower_bound: float) -> None:
    """Refuse before computing when a lower bound on ln(result) already means too many digits."""
    if log_lower_bound > MAX_DIGITS * math.log(10):
        raise ToolError(f"the result would have more than {MAX_DIGITS} digits")


def factorial(n: Number) -> int:
    """n! for whole n, refused before computing when it exceeds `MAX_DIGITS` digits."""
    n = _whole(n, "factorial's argument")
    _refuse_over(math.lgamma(n + 1))
    return math.factorial(n)


def comb(n: Number, k: Number) -> int:
    """Combinations of k out of n (0 when k > n)."""
    n, k = _whole(n, "n"), _whole(k, "k")
    small = min(k, n - k)
    if small > 0:  # comb(n, k) >= (n / k) ** k, and below that bound it is cheap to compute
        _refuse_over(small * math.log(n / small))
    return math.comb(n, k)


def perm(n: Number, k: Number | None = None) -> int:
    """Ordered arrangements of k out of n (all n when k is omitted)."""
    n = _whole(n, "n")
    k = n if k is None else _whole(k, "k")
    if 0 < k <= n:  # perm(n, k) >= max((n - k + 1) ** k, k!)
        _refuse_over(max(k * math.log(n - k + 1), math.lgamma(k + 1)))
    return math.perm(n, k)


def _extreme(pick: Callable[..., Number]) -> Callable[..., Number]:
    def extreme(*values: Number) -> Number:
        if not values:
            raise ValueError("needs at least one number")
        return pick(values)

    return extreme


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _round(x: Number, digits: Number | None = None) -> Number:
    if digits is None:
        return round(x)
    if not float(digits).is_integer():
        raise ValueError("the number of digits must be a whole number")
    return round(x, int(digits))


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt,
    "log": _log,
    "ln": math.log,
    "log10": math.log10,
    "log2": math.log2,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "asin": math.asin,
    "acos": math.acos,
    "atan": math.atan,
    "abs": abs,
    "round": _round,
    "floor": math.floor,
    "ceil": math.ceil,
    "min": _extreme(min),
    "max": _extreme(max),
    "factorial": factorial,
    "comb": comb,
    "perm": perm,
}
