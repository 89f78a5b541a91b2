"""Config models of the rollout: the agent loop's limits and each tool kind."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from agentmill.configbase import Component


class CalculatorToolConfig(Component):
    """Arithmetic and common functions, evaluated by walking the AST (never `eval`)."""

    type: Literal["calculator"] = "calculator"
    name: str = "calculator"


class PythonToolConfig(Component):
    """Model-written code in a sandboxed subprocess (bubblewrap; see the tool's docstring)."""

    type: Literal["python"] = "python"
    name: str = "python"
    timeout_s: float = Field(default=10.0, gt=0)
    cpu_s: int = Field(default=10, ge=1)
    memory_mb: int = Field(default=512, ge=16)
    max_processes: int = Field(default=32, ge=1)
    max_output_bytes: int = Field(default=8192, ge=64)
    python: str | None = None  # interpreter inside the sandbox; default: the running one


class SearchToolConfig(Component):
    """BM25 search over a local corpus (`search`) and reading a document by id (`open`)."""

    type: Literal["search"] = "search"
    corpus: Path | None = None  # a folder of .txt/.md files or a JSONL file; None: bundled corpus
    name: str = "search"
    open_name: str = "open"
    top_k: int = Field(default=5, ge=1)
    snippet_chars: int = Field(default=300, ge=20)
    max_open_chars: int = Field(default=4000, ge=100)


class FunctionToolConfig(Component):
    """Any Python function, by dotted path (`package.module:function` or `package.module.function`);
    its JSON schema comes from the type hints and the docstring."""

    type: Literal["function"] = "function"
    path: str
    name: str | None = None


def _tool_type(v: Any) -> str:
    if isinstance(v, str):
        return v
    return v.get("type", "") if isinstance(v, dict) else getattr(v, "type", "")


def _tool_shorthand(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


ToolConfig = Annotated[
    Annotated[CalculatorToolConfig, Tag("calculator")]
    | Annotated[PythonToolConfig, Tag("python")]
    | Annotated[SearchToolConfig, Tag("search")]
    | Annotated[FunctionToolConfig, Tag("function")],
    Discriminator(_tool_type),
]


class AgentConfig(Component):
    """Limits of one trajectory; each ends it with a recorded stop reason."""

    max_steps: int = Field(default=8, ge=1)
    max_total_tokens: int = Field(default=4096, ge=1)  # completion tokens over all steps
    max_wall_s: float = Field(default=300.0, gt=0)
    tool_timeout_s: float = Field(default=30.0, gt=0)
    # tool_choice of the FIRST step only (later steps use params.tool_choice): "required", a
    # tool's name, "none", or "expected": per task, what its `expected_calls` say is right (the
    # first expected tool by name, "required" when its first step names several, "none" when
    # the task expects no call, unset when the task has no opinion). Sampling training data with
    # "expected" and evaluating unforced teaches a small model when to call (docs/train.md).
    first_tool_choice: str | None = None
    # The fraction of samples whose first valid tool call gets a transient failure instead of
    # its result (chosen by a hash of the sample's key: the same on every resume), so the
    # data holds trajectories in which a call fails and the model recovers.
    inject_tool_failure: float = Field(default=0.0, ge=0.0, le=1.0)
