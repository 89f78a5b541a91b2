"""Task sources, looked up by the config's `type` in one visible table, imported lazily."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

from agentmill.records import Task
from agentmill.sources.files import Bad

SOURCES: dict[str, str] = {
    "file": "agentmill.sources.files:iter_tasks",
    "synth": "agentmill.synth.source:iter_tasks",
}


def iter_source(cfg: Any) -> Iterator[Task | Bad]:
    """Tasks (or `Bad` items for records that could not be read) from one configured source."""
    module, _, attr = SOURCES[cfg.type].partition(":")
    return getattr(importlib.import_module(module), attr)(cfg)


__all__ = ["SOURCES", "Bad", "iter_source"]
