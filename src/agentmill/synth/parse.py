"""Reading the generator's JSON out of what a real model writes.

Models wrap JSON in code fences, add prose before or after it, use single quotes, or cut it
off. `extract_json` tries, in order: each fenced block, the whole text, then each balanced
`{...}` span; the first that parses into a dict wins. Nothing parses: `None` (the caller
counts it as the drop reason `unparseable`, never raises).

>>> extract_json('Sure!\\n```json\\n{"query": "hi", "calls": []}\\n```\\nHope it helps.')
{'query': 'hi', 'calls': []}
>>> extract_json('Here: {"a": 1} and more text')
{'a': 1}
>>> extract_json("{'a': [1, 2]}")
{'a': [1, 2]}
>>> extract_json('{"a": 1') is None
True
"""

from __future__ import annotations

from typing import Any

from agentmill.jsontext import json_objects


def extract_json(text: str) -> dict[str, Any] | None:
    """The first JSON object found in `text` (see the module docstring), else None."""
    found = json_objects(text)
    return found[0] if found else None
