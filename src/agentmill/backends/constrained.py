"""Forced tool calls for the local backend: `tool_choice` "required" or a function name.

The prompt ends with the forced prefix `<tool_call>\\n`, and generation is constrained (xgrammar)
to one JSON object valid against

    {"type": "object", "required": ["name", "arguments"],
     "properties": {"name": {"const": <tool>}, "arguments": <that tool's parameters>}}

(an `anyOf` of these over the offered tools for "required"), written without free whitespace:
with free whitespace the small model fills its budget with newlines. The reply text is then
`<tool_call>\\n{json}\\n</tool_call>`, exactly the text protocol of `rollout/protocol.py`, so the
agent loop parses forced and free calls alike. One call per forced turn (no parallel calls).

>>> schema = call_schema([{"name": "calc", "parameters": {"type": "object"}}])
>>> schema["properties"]["name"], schema["required"]
({'const': 'calc'}, ['name', 'arguments'])
"""

from __future__ import annotations

import json
import threading
from typing import Any

from agentmill.backends.base import BackendError
from agentmill.rollout.protocol import CALL_CLOSE, CALL_OPEN, tool_function

FORCED_PREFIX = CALL_OPEN + "\n"
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def forced_functions(
    tools: list[dict[str, Any]] | None, tool_choice: str
) -> list[dict[str, Any]] | None:
    """The functions a `tool_choice` forces one call from: every offered one for "required",
    the named one for a name; None when nothing is forced ("auto", "none", or no tools).
    A name that is not offered is a "bad_request" BackendError."""
    if not tools or tool_choice in ("auto", "none"):
        return None
    functions = [tool_function(t) for t in tools]
    if tool_choice == "required":
        return functions
    named = [f for f in functions if f.get("name") == tool_choice]
    if not named:
        offered = ", ".join(repr(f.get("name")) for f in functions)
        raise BackendError(
            "bad_request",
            f"tool_choice={tool_choice!r} names no offered tool (offered: {offered})",
            transient=False,
        )
    return named[:1]


def call_schema(functions: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to one of `functions` (`{"name", "arguments"}`)."""
    options = [
        {
            "type": "object",
            "properties": {
                "name": {"const": f.get("name", "")},
                "arguments": f.get("parameters") or _EMPTY_PARAMETERS,
            },
            "required": ["name", "arguments"],
        }
        for f in functions
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def wrap_call(json_text: str, *, complete: bool) -> str:
    """The reply text of a forced call; a call cut short (max_tokens) stays unclosed, so
    `parse_tool_calls` reports it as malformed."""
    return FORCED_PREFIX + json_text + ("\n" + CALL_CLOSE if complete else "")


class GrammarCache:
    """Compiled call grammars, one per distinct call schema, for one tokenizer (thread-safe).
    Holds the `max_size` most recently compiled (runs with many tool sets stay bounded)."""

    def __init__(self, tokenizer: Any, vocab_size: int, max_size: int = 256):
        self.max_size = max_size
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._compiler: Any = None
        self._grammars: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, functions: list[dict[str, Any]]) -> Any:
        """The compiled grammar (an `xgrammar.CompiledGrammar`) of a call to one of `functions`."""
        # Key order is kept: it is the order the model writes ("name" first, as in the prompt).
        schema = json.dumps(call_schema(functions))
        with self._lock:
            grammar = self._grammars.get(schema)
            if grammar is None:
                grammar = self._grammars[schema] = self._compile(schema)
                if len(self._grammars) > self.max_size:
                    del self._grammars[next(iter(self._grammars))]
            return grammar

    def _compile(self, schema: str) -> Any:
        import xgrammar as xgr

        if self._compiler is None:
            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self._vocab_size)
            self._compiler = xgr.GrammarCompiler(info)
        return self._compiler.compile_json_schema(schema, any_whitespace=False)

    def __len__(self) -> int:
        return len(self._grammars)


def logits_processor(grammars: list[Any]) -> Any:
    """A fresh xgrammar logits processor for one `generate`: one grammar per batch row."""
    from xgrammar.contrib.hf import LogitsProcessor

    return LogitsProcessor(list(grammars))


class RowGrammars:
    """One grammar matcher per row, for a decoding loop whose rows leave the batch as they
    end (`shared_prefix.decode`): `mask` the next logits of the rows still running, then
    `accept` the tokens picked for them. (xgrammar's HF processor numbers rows by batch
    position, which a shrinking batch breaks.)"""

    def __init__(self, grammars: list[Any]):
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
        self.bitmask = xgr.allocate_token_bitmask(
            len(grammars), grammars[0].tokenizer_info.vocab_size
        )

    def mask(self, logits: Any, live: list[int]) -> Any:
        """`logits` (one row per entry of `live`, the input rows still running) with every
        token its row's grammar forbids at -inf; float32, masked in place."""
        import xgrammar as xgr

        logits = logits.float()
        for b, row in enumerate(live):
            self.matchers[row].fill_next_token_bitmask(self.bitmask, b)
        bitmask = self.bitmask[: len(live)].to(logits.device)
        xgr.apply_token_bitmask_inplace(logits, bitmask)
        return logits

    def accept(self, live: list[int], tokens: list[int]) -> None:
        for row, token in zip(live, tokens, strict=True):
            self.matchers[row].accept_token(token)
