"""`python -m agentmill ...` is the same as the `agentmill` command."""

from agentmill.cli import entry

entry()
