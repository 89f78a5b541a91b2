"""agentmill: verified training data for tool-using LLM agents."""

from agentmill import compiled as _compiled

__version__ = "0.1.0"

_compiled.install()  # an edited module runs as its source, never as a stale compiled copy
