"""The base of every config model, and the field markers the run fingerprint reads."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

# A field that does not change what a run produces (endpoints, concurrency, timeouts).
NO_FP: dict[str, Any] = {"fingerprint": False}
# A field whose growth only adds work (n, limit): a larger value tops a run up.
ADDITIVE: dict[str, Any] = {"additive": True}


class Component(BaseModel):
    """Base of every config model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")
