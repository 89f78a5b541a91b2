"""Mask secrets and personal data in trajectories before anything is stored.

Built-in rules, applied in this order (so a key is never half-eaten by the phone rule):

- `[REDACTED_KEY]`: provider key shapes (`sk-...`, `sk-ant-...`, `AKIA...`/`ASIA...`,
  `ghp_`/`gho_`/`ghs_`/`github_pat_...`, `xox?-...`, `AIza...`, `hf_...`, `sk_live_...`,
  JWTs) and any value of 12+ letters and digits right after a key-ish name
  (`api_key=`, `"secret": "`, `token:`, `password=`, `authorization:` ...).
- `[REDACTED_TOKEN]`: the token after `Bearer ` (the word `Bearer` stays).
- `[REDACTED_EMAIL]`: e-mail addresses.
- `[REDACTED_PHONE]`: international numbers (`+` and 7 to 15 digits in groups) and common
  national forms (`(415) 555-2671`, `415-555-2671`, `020 7946 0958`, `06 12 34 56 78`).
  Plain numbers (`12345`, `1234567`), dates (`2024-01-15`, `15.01.2024`), times, versions
  and IP addresses are left alone.

User patterns (regexes) are applied first and become `[REDACTED]`.

>>> r = Redactor()
>>> r.text("mail bob@example.com or call +1 415 555 2671, key sk-abcdefghijklmnop1234")
'mail [REDACTED_EMAIL] or call [REDACTED_PHONE], key [REDACTED_KEY]'
>>> r.text("order 12345 shipped on 2024-01-15 at 10:30")
'order 12345 shipped on 2024-01-15 at 10:30'
"""

from __future__ import annotations

import re
from typing import Any

from agentmill.errors import UserError
from agentmill.records import Trajectory

_KEYISH = (
    r"api[_-]?key|apikey|secret(?:[_-]?key)?|access[_-]?key(?:[_-]?id)?|token|auth[_-]?token"
    r"|access[_-]?token|password|passwd|pwd|authorization|client[_-]?secret|private[_-]?key"
)
_KEY_SHAPES = [
    r"\bsk-(?:proj-|ant-(?:api\d\d-)?|live-|test-)?[A-Za-z0-9_-]{16,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b",
    r"\bgithub_pat_[A-Za-z0-9_]{22,}",
    r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    r"\bAIza[0-9A-Za-z_-]{35}",
    r"\bhf_[A-Za-z0-9]{30,}\b",
    r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}",
    r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
]
# a value after a key-ish name: 12+ chars of token alphabet holding a letter and a digit
_KEY_VALUE = re.compile(
    rf"(?i)((?<![A-Za-z0-9])(?:{_KEYISH})[\"']?\s*[:=]\s*[\"']?)"
    r"(?=[^\s\"']*[A-Za-z])(?=[^\s\"']*\d)([A-Za-z0-9_\-./+=]{12,})"
)
_BEARER = re.compile(r"(?i)(\bBearer\s+)[A-Za-z0-9._~+/=-]{12,}")
_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)
_PHONES = [
    # +CC then groups: +1 415 555 2671, +44 (0)20 7946 0958, +33612345678
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,5}(?![\w.-]*\d)",
    r"(?<![\w(])\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b",  # (415) 555-2671
    r"(?<![\w.-])\d{3}[.-]\d{3}[.-]\d{4}(?![\w.-]*\d)",  # 415-555-2671
    r"(?<![\w.-])0\d{1,4}[ -]\d{3,4}[ -]?\d{3,4}(?![\w.:-]*\d)",  # 020 7946 0958
    r"(?<![\w.-])0[1-9](?:[ .]\d{2}){4}(?![\w.-]*\d)",  # 06 12 34 56 78
]
_PHONE = re.compile("|".join(f"(?:{p})" for p in _PHONES))
_MIN_PHONE_DIGITS = 7


class Redactor:
    """Masks secrets and personal data in strings and in whole trajectories.

    `patterns` are extra regexes (masked as `[REDACTED]`); `builtin` turns the built-in
    rules on or off. `extra_patterns` is an alias of `patterns` (config files use it).
    """

    def __init__(
        self,
        patterns: list[str] | None = None,
        builtin: bool = True,
        *,
        extra_patterns: list[str] | None = None,
    ):
        self.builtin = builtin
        self.patterns = [_compile(p) for p in [*(patterns or []), *(extra_patterns or [])]]
        self.keys = re.compile("|".join(f"(?:{p})" for p in _KEY_SHAPES))

    def text(self, s: str) -> str:
        """`s` with every match masked."""
        for p in self.patterns:
            s = p.sub("[REDACTED]", s)
        if not self.builtin:
            return s
        s = self.keys.sub("[REDACTED_KEY]", s)
        s = _KEY_VALUE.sub(lambda m: m.group(1) + "[REDACTED_KEY]", s)
        s = _BEARER.sub(lambda m: m.group(1) + "[REDACTED_TOKEN]", s)
        s = _EMAIL.sub("[REDACTED_EMAIL]", s)
        return _PHONE.sub(_phone, s)

    def value(self, v: Any) -> Any:
        """Every string inside `v` (dicts, lists) masked; dict keys are kept."""
        if isinstance(v, str):
            return self.text(v)
        if isinstance(v, dict):
            return {k: self.value(x) for k, x in v.items()}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        return v

    def trajectory(self, t: Trajectory) -> Trajectory:
        """`t` with its messages (text, parts, reasoning, tool-call arguments), final answer
        and metadata masked. Ids, provenance and tool schemas are kept."""
        return Trajectory.model_validate(self.record(t.to_dict()))

    def record(self, data: dict[str, Any]) -> dict[str, Any]:
        """`trajectory` on a trajectory's canonical dict (a new dict; `data` is unchanged).
        Only strings change, so the result is canonical too."""
        data = dict(data)
        for key in ("messages", "final_answer", "metadata", "verdicts"):
            if key in data:
                data[key] = self.value(data[key])
        return data


def _phone(m: re.Match[str]) -> str:
    digits = sum(c.isdigit() for c in m.group(0))
    return "[REDACTED_PHONE]" if _MIN_PHONE_DIGITS <= digits <= 15 else m.group(0)


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise UserError(
            f"redaction pattern {pattern!r} is not a valid regular expression ({e}); "
            "fix or remove it"
        ) from None
