"""Errors that reach the user as one line.

`UserError` is for bad input (a file, a config, an argument): the CLI prints its message on
one line and exits with code 2. The message names the problem AND the fix.
"""

from __future__ import annotations


class AgentmillError(Exception):
    """Base class of every error agentmill raises on purpose."""

    exit_code = 1


class UserError(AgentmillError):
    """Bad input from the user: a file, a config, an argument, an unreachable endpoint."""

    exit_code = 2


class BadRecord(ValueError):
    """One record inside a good file is malformed: it is skipped and written to failures."""
