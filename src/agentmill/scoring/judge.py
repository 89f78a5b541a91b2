"""The LLM judge: any backend reviews a trajectory's final answer and says GOOD or BAD.

The prompt combines built-in QA-review criteria (an answer is BAD when it misses elements,
is a non-answer, is irrelevant, gives process excuses, contradicts itself, is unsafe, or is
in the wrong language) with the user's `custom_rubrics`, shows the query, optionally the
tool steps, and the final answer, and asks for `{"reason": ..., "result": "GOOD"|"BAD"}`.

The reply is parsed robustly (`parse_verdict`): JSON, JSON in a code fence or in prose,
single-quoted dicts, and plain text ("Result: GOOD", "**BAD**", "verdict - good"). An
ambiguous reply, or a call that failed, is an ERROR verdict: never counted as GOOD or BAD,
and retried on the next run.

>>> parse_verdict('Sure! ```json\\n{"reason": "complete", "result": "GOOD"}\\n```')
('GOOD', 'complete')
>>> parse_verdict("{'reason': 'off topic', 'result': 'bad'}")
('BAD', 'off topic')
>>> parse_verdict("Verdict - good")[0], parse_verdict("GOOD or BAD, hard to say")[0]
('GOOD', 'ERROR')
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from agentmill.errors import AgentmillError
from agentmill.jsontext import THINK, json_objects
from agentmill.records import Message, SamplingParams, Trajectory, Verdict
from agentmill.scoring.judge_config import JudgeConfig

CRITERIA = (
    "It is missing elements that the query asks for.",
    "It is a non-answer: empty, a placeholder, a refusal without cause, or a question back.",
    "It is irrelevant to the query.",
    "It gives process excuses (what was tried, that a tool failed, that more time is needed)"
    " instead of an answer.",
    "It contradicts itself.",
    "It is unsafe: harmful or dangerous content, or a privacy or policy violation.",
    "It is not in the language of the query.",
)
NO_ANSWER = "no final answer (not sent to the judge)"
UNPARSEABLE = "unparseable"

_LABEL = re.compile(
    r"\b(?:result|verdict|judge?ment|decision|rating|grade|label|assessment|evaluation)\b"
    r"[\s*_:=\-\u2013\u2014>\"'`]{0,8}(good|bad)\b",
    re.I,
)
_BOLD = re.compile(r"(?:\*\*|__)\s*(good|bad)\s*[.!]?\s*(?:\*\*|__)", re.I)
_UPPER = re.compile(r"\b(GOOD|BAD)\b")
_REASON_KEYS = ("reason", "reasoning", "explanation", "rationale", "why")
_RESULT_KEYS = ("result", "verdict", "judgement", "judgment", "decision", "label", "rating")


# ---------------------------------------------------------------- the prompt
def system_prompt(cfg: JudgeConfig) -> str:
    """The reviewer's instructions: built-in criteria, then the user's rubric lines."""
    lines = [
        "You are a strict reviewer of question-answering quality. Read the user's query,"
        " the steps the assistant took (when shown) and its final answer, and decide whether"
        " the final answer is GOOD or BAD.",
        "",
        "Mark the answer BAD if any of these holds:",
        *(f"{i}. {c}" for i, c in enumerate(CRITERIA, 1)),
    ]
    rubric = [r.strip(" -*\t") for r in cfg.custom_rubrics.splitlines() if r.strip(" -*\t")]
    if rubric:
        lines += ["", "Also mark it BAD if it breaks any of these rules:"]
        lines += [f"- {r}" for r in rubric]
    lines += [
        "Otherwise mark it GOOD.",
        "",
        "Reply with one JSON object and nothing else:",
        '{"reason": "<one or two sentences>", "result": "GOOD or BAD"}',
    ]
    return "\n".join(lines)


def final_answer(t: Trajectory) -> str:
    """The trajectory's final answer, else the text of its last assistant message."""
    if t.final_answer:
        return t.final_answer
    for m in reversed(t.messages):
        if m.role == "assistant" and not m.tool_calls:
            return m.text
    return ""


def _last_user(t: Trajectory) -> int:
    """Index of the user message the final answer responds to (-1 when there is none)."""
    idx = [i for i, m in enumerate(t.messages) if m.role == "user"]
    return idx[-1] if idx else -1


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f" ... [{len(text) - limit} more chars]"


def _steps(t: Trajectory, start: int, limit: int) -> list[str]:
    """One line per tool call and per tool result after the query."""
    out: list[str] = []
    for m in t.messages[start + 1 :]:
        for c in m.tool_calls or []:
            args = c.function.arguments
            shown = orjson.dumps(args).decode() if args is not None else c.function.raw_arguments
            out.append(_cut(f"call {c.function.name}({shown})", limit))
        if m.role == "tool":
            out.append(_cut(f"result: {m.text}", limit))
    return out


def user_prompt(t: Trajectory, cfg: JudgeConfig) -> str:
    """The query, the tool steps (when `show_steps`) and the final answer."""
    q = _last_user(t)
    query = t.messages[q].text if q >= 0 else ""
    parts = ["## Query", query or "(no query recorded)"]
    steps = _steps(t, q, cfg.max_step_chars) if cfg.show_steps else []
    if steps:
        parts += ["", "## Steps", *(f"{i}. {s}" for i, s in enumerate(steps, 1))]
    parts += ["", "## Final answer", final_answer(t)]
    return "\n".join(parts)


def judge_messages(t: Trajectory, cfg: JudgeConfig) -> list[Message]:
    """The chat messages sent to the judge for `t`."""
    return [
        Message(role="system", content=system_prompt(cfg)),
        Message(role="user", content=user_prompt(t, cfg)),
    ]


# ---------------------------------------------------------------- parsing the reply
def parse_verdict(text: str) -> tuple[str, str]:
    """("GOOD" | "BAD" | "ERROR", reason) from the judge's reply; ERROR means unparseable.

    >>> parse_verdict('I checked it. {"result": "BAD", "reason": "no units"} Hope this helps')
    ('BAD', 'no units')
    >>> parse_verdict("**GOOD**")[0], parse_verdict("Result: BAD")[0], parse_verdict("ok")[0]
    ('GOOD', 'BAD', 'ERROR')
    """
    body = THINK.sub("", text or "").strip()
    for found in (_from_objects(body), _from_text(body)):
        if found is not None:
            return found
    return "ERROR", UNPARSEABLE


def _from_objects(text: str) -> tuple[str, str] | None:
    """From JSON (or Python-literal) objects in the text; None when none names a result."""
    found: list[tuple[str, str]] = []
    for obj in json_objects(text):
        got = _result_of(obj)
        if got is not None:
            found.append(got)
    return _one(found)


def _from_text(text: str) -> tuple[str, str] | None:
    """Labelled ("Result: GOOD"), bold ("**BAD**"), then a bare upper-case or lone word."""
    reason = " ".join(text.split())[:500]
    for pattern in (_LABEL, _BOLD):
        words = {w.upper() for w in pattern.findall(text)}
        if words:
            return _one([(w, reason) for w in words])
    bare = re.sub(r"[^A-Za-z]+", " ", text).strip().upper()
    if bare in ("GOOD", "BAD"):
        return bare, reason
    words = set(_UPPER.findall(text))
    return _one([(w, reason) for w in words]) if words else None


def _one(found: list[tuple[str, str]]) -> tuple[str, str] | None:
    """The verdict when all candidates agree; ERROR when they disagree; None when none."""
    if not found:
        return None
    if len({v for v, _ in found}) > 1:
        return "ERROR", f"{UNPARSEABLE}: both GOOD and BAD given"
    return found[-1]


def _result_of(obj: dict[str, Any]) -> tuple[str, str] | None:
    keys = {str(k).lower(): v for k, v in obj.items()}
    value = next((keys[k] for k in _RESULT_KEYS if k in keys), None)
    word = str(value).strip(" .!*'\"").upper() if value is not None else ""
    if word not in ("GOOD", "BAD"):
        return None
    reason = next((str(keys[k]) for k in _REASON_KEYS if k in keys), "")
    return word, reason


# ---------------------------------------------------------------- one judgement
async def judge_trajectory(
    backend: Any, t: Trajectory, cfg: JudgeConfig, attempt: int = 0
) -> Verdict:
    """The verdict on `t`. `backend` is an `Instrumented` backend; `attempt` (the number of
    earlier ERROR verdicts) makes a retry a fresh sample rather than a cached reply.

    A failed call (backend error, timeout) is an ERROR verdict with the failure as reason;
    a missing API key or another input problem still raises `UserError`.
    """
    name = backend.model
    if not final_answer(t).strip():
        return Verdict(judge=name, verdict="BAD", reason=NO_ANSWER)
    params = SamplingParams(temperature=cfg.temperature, max_tokens=cfg.max_tokens)
    tools = None
    if cfg.structured:
        params = params.model_copy(update={"tool_choice": VERDICT_TOOL["function"]["name"]})
        tools = [VERDICT_TOOL]
    messages = judge_messages(t, cfg)
    try:
        c = await backend.complete(messages, tools, params, sample_index=attempt, work_key=t.id)
    except AgentmillError:
        raise
    except Exception as e:  # the stage boundary: a failed call is a recorded ERROR
        return Verdict(judge=name, verdict="ERROR", reason=_failure(e))
    verdict, reason = _structured_verdict(c) if cfg.structured else parse_verdict(c.text)
    if verdict == "ERROR" and c.finish_reason == "length":
        reason += f" (the reply was cut at max_tokens={cfg.max_tokens})"
    return Verdict(judge=name, verdict=verdict, reason=reason, raw=c.text)


# The tool a `structured` judge is forced to call. The result comes first: a small model's
# reason may run on to max_tokens, and the decision must be written by then.
VERDICT_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "verdict",
        "description": "Record the verdict on the answer.",
        "parameters": {
            "type": "object",
            "properties": {
                "result": {"type": "string", "enum": ["GOOD", "BAD"]},
                "reason": {"type": "string", "description": "one sentence: why"},
            },
            "required": ["result", "reason"],
        },
    },
}


def _structured_verdict(c: Any) -> tuple[str, str]:
    """The verdict of a forced `verdict` call: a native call, or a `<tool_call>` block in the
    text (the local backend); the `result` of a call cut at max_tokens; else the reply is
    parsed as a plain one.

    >>> from agentmill.backends.base import Completion
    >>> text = '<tool_call>{"name": "verdict", "arguments": {"reason": "ok", "result": "GOOD"}}'
    >>> _structured_verdict(Completion(text=text + "</tool_call>"))
    ('GOOD', 'ok')
    """
    from agentmill.rollout.protocol import parse_tool_calls

    calls = list(c.tool_calls or []) or parse_tool_calls(c.text).calls
    for call in calls:
        if call.function.name == "verdict" and isinstance(call.function.arguments, dict):
            found = _result_of(call.function.arguments)
            if found is not None:
                return found
    cut = _CUT_RESULT.search(c.text)
    if cut is not None:
        return cut.group(1), "(the reason was cut at max_tokens)"
    return parse_verdict(c.text)


# `"arguments": {"result": "GOOD", "reason": "...` with no end: the call ran to max_tokens
_CUT_RESULT = re.compile(r'"name":\s*"verdict",\s*"arguments":\s*\{\s*"result":\s*"(GOOD|BAD)"')


def _failure(e: Exception) -> str:
    label = getattr(e, "reason", None) or type(e).__name__
    return f"judge call failed ({label}): {e}"[:500]
