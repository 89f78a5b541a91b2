"""Studio span_table rows -> `Span` (both layouts), the per-row part of the Studio ingester.

Rows come as tuples in `studio.Layout.columns` order: span id, trace id, parent id, name,
start, end, attributes (already decoded), status code / status, status detail / message,
scope, events, conversation, kind hint (operationName / spanKind).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from agentmill.ingest.spans import Span, SpanEvent

NO_CONVERSATION = {"unknown", "[no_session_id]"}  # Studio's / agentscope 2.x's "none"

_SCOPES: dict[str, str | None] = {}


def new_span(row: tuple[Any, ...], attributes: dict[str, Any], origin: dict[str, Any]) -> Span:
    # positional: keyword construction costs several times more, per span
    status, message = _status(row[7], row[8])
    try:
        start, end = int(row[4]), (int(row[5]) if row[5] else None)
    except (TypeError, ValueError):
        start, end = int_ns(row[4]), (int_ns(row[5]) if row[5] else None)
    events = _events(row[10], True) if row[10] and row[10] != "[]" else []
    scope = _SCOPES.get(row[9]) if row[9] in _SCOPES else _scope(row[9])
    conv = row[11] if row[11] not in NO_CONVERSATION else None
    return Span(
        row[1] or "", str(row[0]), row[2] or None, row[3] or "", start, end, attributes,
        status, message, conv, events, scope, row[12], origin, True,
    )  # fmt: skip


def old_span(row: tuple[Any, ...], attributes: dict[str, Any], origin: dict[str, Any]) -> Span:
    status = str(row[7] or "").upper()
    return Span(
        trace_id=row[1] or "",
        span_id=str(row[0]),
        parent_id=row[2] or None,
        name=row[3] or "",
        start_ns=iso_ns(row[4]),
        end_ns=iso_ns(row[5]) if row[5] else None,
        attributes=attributes,
        status="error" if status == "ERROR" else "ok" if status == "OK" else "unset",
        status_message=row[8] or "",
        conversation_id=row[11],
        events=_events(row[10], new=False),
        scope="agentscope.tracing._trace",
        kind_hint=row[12],
        origin=origin,
        studio_form=True,
    )


def _status(code: Any, text: str | None) -> tuple[str, str]:
    """(unset|ok|error, message) from the statusCode column, else the status JSON (which is
    parsed only when needed: its message matters only for errors)."""
    if code == 1:
        return "ok", ""
    if code is None or code == 2:
        try:
            status = orjson.loads(text) if text else {}
        except orjson.JSONDecodeError:
            status = {}
        status = status if isinstance(status, dict) else {}
        code = status.get("code") if code is None else code
        if code == 2:
            return "error", str(status.get("message") or "")
    return ("ok", "") if code == 1 else ("unset", "")


def _scope(text: str | None) -> str | None:
    """'name version' of the instrumentation scope (cached: a file has a handful)."""
    if not text:
        return None
    if text not in _SCOPES:
        try:
            scope = orjson.loads(text)
        except orjson.JSONDecodeError:
            scope = {}
        scope = scope if isinstance(scope, dict) else {}
        name = " ".join(str(scope[k]) for k in ("name", "version") if scope.get(k))
        _SCOPES[text] = name or None
    return _SCOPES[text]


def _events(text: str | None, new: bool) -> list[SpanEvent]:
    if not text or text == "[]":
        return []
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    out = []
    for e in items if isinstance(items, list) else []:
        if isinstance(e, dict):
            when = int_ns(e.get("time")) if new else iso_ns(e.get("timestamp"))
            attrs = e.get("attributes") if isinstance(e.get("attributes"), dict) else {}
            out.append(SpanEvent(str(e.get("name") or ""), when, attrs))
    return out


def int_ns(value: Any) -> int:
    """Decimal nanosecond text (maybe a JS double's rendering) as an int; 0 when unreadable."""
    if isinstance(value, int):
        return value
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(Decimal(str(value)))
        except (InvalidOperation, ValueError):
            return 0


def iso_ns(value: Any) -> int:
    if not value:
        return 0
    try:
        when = datetime.fromisoformat(str(value))
    except ValueError:
        return int_ns(value)
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000
