"""JSON objects out of what a real model writes: in code fences, amid prose, single-quoted, or
cut off. Used by the LLM judge (verdicts) and the task generator (candidates).

`json_objects` tries each fenced block, the whole text, then each balanced `{...}` span, and
returns every distinct dict that parses (`orjson`, else `ast.literal_eval` for single-quoted
dicts: literals only, never code). A `<think>...</think>` block is dropped first.

>>> json_objects('Sure!\\n```json\\n{"query": "hi"}\\n```\\nor {"query": "yo"}')
[{'query': 'hi'}, {'query': 'yo'}]
>>> json_objects("{'a': [1, 2]}")
[{'a': [1, 2]}]
>>> json_objects('{"a": 1')
[]
"""

from __future__ import annotations

import ast
import re
from typing import Any

import orjson

FENCE = re.compile(r"```[A-Za-z]*\s*(.*?)```", re.S)
THINK = re.compile(r"<think>.*?(</think>|$)", re.S)


def json_objects(text: str) -> list[dict[str, Any]]:
    """Every distinct dict found in `text`, in the order above."""
    text = THINK.sub("", text or "")
    out: list[dict[str, Any]] = []
    for candidate in [*FENCE.findall(text), text, *brace_spans(text)]:
        obj = _load(candidate.strip())
        if isinstance(obj, dict) and obj not in out:
            out.append(obj)
    return out


def _load(s: str) -> Any:
    if not s.startswith("{"):
        return None
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def brace_spans(text: str) -> list[str]:
    """Each outermost balanced `{...}` span, skipping braces inside quoted strings.

    >>> brace_spans('a {"b": "}"} c {d}')
    ['{"b": "}"}', '{d}']
    """
    spans: list[str] = []
    depth, start, quote, escaped = 0, 0, "", False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
            continue
        if ch in "\"'" and depth:
            quote = ch
        elif ch == "{":
            start = i if depth == 0 else start
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans
