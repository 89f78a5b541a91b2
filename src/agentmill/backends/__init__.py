"""Model backends, looked up by the config's `type` in one visible table, imported lazily."""

from __future__ import annotations

import importlib
from typing import Any

from agentmill.backends.base import Backend, BackendError, Completion

BACKENDS: dict[str, str] = {
    "openai": "agentmill.backends.openai:OpenAIBackend",
    "local": "agentmill.backends.local:LocalBackend",
    "scripted": "agentmill.backends.scripted:ScriptedBackend",
}


def build_backend(name: str, cfg: Any) -> Backend:
    """Instantiate the backend class registered for `cfg.type`; heavy imports happen here."""
    module, _, attr = BACKENDS[cfg.type].partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls(name, cfg)


__all__ = ["BACKENDS", "Backend", "BackendError", "Completion", "build_backend"]
