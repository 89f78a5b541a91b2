"""OTLP/JSON decoding: export requests (one per line, or one whole document) -> plain dicts,
and the `Spool` (a temporary SQLite file) that regroups decoded spans by conversation.

The OTLP/JSON encoding (opentelemetry-proto's spec) uses camelCase field names, hex trace and
span ids, 64-bit integers as decimal strings, and attribute values wrapped in `AnyValue`
(`{"stringValue": ...}`, `{"intValue": "3"}`, `{"arrayValue": {"values": [...]}}`, ...).
We also accept what other writers produce: snake_case field names (protobuf's json_format
with `preserving_proto_field_name`), base64 ids (json_format's `bytes` encoding), integers as
numbers, status codes as names ("STATUS_CODE_ERROR").

>>> decode_any({"kvlistValue": {"values": [{"key": "n", "value": {"intValue": "3"}}]}})
{'n': 3}
>>> hex_id("AAAAAAAAAAAAAAAAAAAAAQ==", 16), hex_id("00000000000000000000000000000001", 16)
('00000000000000000000000000000001', '00000000000000000000000000000001')
"""

from __future__ import annotations

import base64
import binascii
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.ingest.base import IngestStats

_STATUS = {0: "unset", 1: "ok", 2: "error", "STATUS_CODE_UNSET": "unset"}
_STATUS.update({"STATUS_CODE_OK": "ok", "STATUS_CODE_ERROR": "error"})
# Which top-level key a document of each signal must have (camelCase; snake_case accepted).
SIGNAL_KEYS = {"traces": "resourceSpans", "logs": "resourceLogs"}
_EXPORT_HINT = (
    "write OTLP/JSON with the OpenTelemetry collector's file exporter "
    "(see docs/ingest.md, OpenTelemetry)"
)


@lru_cache(maxsize=256)
def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", camel).lower()


def field(obj: dict[str, Any], camel: str, default: Any = None) -> Any:
    """`obj[camel]`, or its snake_case spelling, or `default`."""
    if camel in obj:
        return obj[camel]
    return obj.get(_snake(camel), default)


def decode_any(value: Any) -> Any:
    """An OTLP `AnyValue` as a plain Python value (bytes stay base64 text)."""
    if not isinstance(value, dict) or not value:
        return None
    (kind, inner), *_ = value.items()
    kind = _snake(kind)
    if kind == "int_value":
        return int(inner)
    if kind == "double_value":
        return float(inner)
    if kind == "array_value":
        return [decode_any(v) for v in (inner or {}).get("values", [])]
    if kind == "kvlist_value":
        return decode_attributes((inner or {}).get("values", []))
    return inner  # string_value, bool_value, bytes_value (base64 text)


def decode_attributes(items: Any) -> dict[str, Any]:
    """An OTLP `KeyValue` list as a flat dict (keys keep their dots)."""
    if isinstance(items, dict):  # a few writers emit a plain mapping
        return dict(items)
    return {kv["key"]: decode_any(kv.get("value")) for kv in items or [] if "key" in kv}


def hex_id(value: Any, size: int) -> str:
    """A trace (size 16) or span (size 8) id as lowercase hex: OTLP/JSON's hex, or base64 as
    protobuf's json_format writes bytes. '' when absent or all zero."""
    if not value:
        return ""
    text = str(value)
    if len(text) == 2 * size and _is_hex(text):
        out = text.lower()
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != size:
            raise ValueError(f"bad id {text!r}: expected {2 * size} hex digits or base64")
        out = raw.hex()
    return "" if out.strip("0") == "" else out


def _is_hex(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) * 2 == len(text)
    except ValueError:
        return False


def nanos(value: Any) -> int:
    """A `*UnixNano` field (decimal string or number) as int; 0 when absent."""
    return int(value) if value not in (None, "") else 0


def status_of(obj: dict[str, Any]) -> tuple[str, str]:
    """(unset|ok|error, message) from an OTLP span status."""
    status = field(obj, "status") or {}
    code = status.get("code", 0)
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return _STATUS.get(code, "unset"), status.get("message") or ""


def iter_documents(
    path: Path, signal: str, stats: IngestStats, strict: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, export request) for each request of `signal` ("traces" | "logs") in a
    JSONL file (one request per line, as the collector's file exporter writes) or one whole
    JSON document. Bad lines are counted skips; a file with no request is a UserError."""
    key, seen = SIGNAL_KEYS[signal], 0
    for lineno, doc in _json_values(path, stats, strict):
        for n, d in [(lineno, d) for d in doc] if isinstance(doc, list) else [(lineno, doc)]:
            if not isinstance(d, dict) or field(d, key) is None:
                if seen == 0:
                    raise UserError(_not_otlp(path, signal, d))
                stats.skip("not_otlp", f"{path}:{n}", strict)
                continue
            seen += 1
            yield n, d
    if seen == 0:
        raise UserError(f"{path}: no OTLP/JSON {signal} in the file; {_EXPORT_HINT}")


def _not_otlp(path: Path, signal: str, doc: Any) -> str:
    other = "logs" if signal == "traces" else "traces"
    if isinstance(doc, dict) and field(doc, SIGNAL_KEYS[other]) is not None:
        flag = "--logs" if other == "logs" else "the traces argument"
        return f"{path} holds OTLP {other}, not {signal}: pass it as {flag}"
    return (
        f"{path} is not OTLP/JSON {signal} (no '{SIGNAL_KEYS[signal]}' at the top); {_EXPORT_HINT}"
    )


def _json_values(path: Path, stats: IngestStats, strict: bool) -> Iterator[tuple[int, Any]]:
    """(line number, value) per JSON line; falls back to one whole document when the first
    two lines do not parse (a pretty-printed file, which is then read whole)."""
    lines = _lines(path)
    head = [next(lines, None), next(lines, None)]
    parsed = [_parse(line) for _, line in filter(None, head)]
    if head[0] is None:
        raise UserError(f"{path} is empty; {_EXPORT_HINT}")
    if all(p is _BAD for p in parsed):
        whole = _parse(path.read_bytes())
        if whole is not _BAD:
            yield 1, whole
            return
    for (lineno, _), value in zip(filter(None, head), parsed, strict=False):
        yield from _checked(path, lineno, value, stats, strict)
    for lineno, line in lines:
        yield from _checked(path, lineno, _parse(line), stats, strict)


def _checked(
    path: Path, lineno: int, value: Any, stats: IngestStats, strict: bool
) -> Iterator[tuple[int, Any]]:
    if value is _BAD:
        stats.skip("invalid_json", f"{path}:{lineno}", strict)
    else:
        yield lineno, value


_BAD = object()


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return _BAD


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) for each non-blank line, the last one even without a newline."""
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                yield n, line


def iter_spans(doc: dict[str, Any]) -> Iterator[tuple[dict, dict, dict]]:
    """(span, resource attributes, scope) for each span of one traces export request; the
    span is still raw: `decode_span` it (it raises ValueError/TypeError on a bad span)."""
    for rs in field(doc, "resourceSpans") or []:
        resource = decode_attributes((field(rs, "resource") or {}).get("attributes"))
        scopes = field(rs, "scopeSpans") or field(rs, "instrumentationLibrarySpans") or []
        for ss in scopes:
            scope = field(ss, "scope") or field(ss, "instrumentationLibrary") or {}
            for span in field(ss, "spans") or []:
                yield span, resource, scope


def decode_span(span: dict[str, Any], resource: dict[str, Any], scope: dict[str, Any]) -> dict:
    """One OTLP span as a plain dict (the spool's row format)."""
    status, message = status_of(span)
    out = {
        "trace_id": hex_id(field(span, "traceId"), 16),
        "span_id": hex_id(field(span, "spanId"), 8),
        "parent_id": hex_id(field(span, "parentSpanId"), 8) or None,
        "name": span.get("name") or "",
        "start_ns": nanos(field(span, "startTimeUnixNano")),
        "end_ns": nanos(field(span, "endTimeUnixNano")) or None,
        "attributes": decode_attributes(span.get("attributes")),
        "status": status,
        "status_message": message,
        "events": [decode_event(e) for e in span.get("events") or []],
        "scope": scope.get("name") or None,
        "scope_version": scope.get("version") or None,
        "service": resource.get("service.name"),
    }
    if not out["trace_id"] or not out["span_id"]:
        raise ValueError("span without a trace id or span id")
    return out


def decode_event(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": event.get("name") or "",
        "time_ns": nanos(field(event, "timeUnixNano")),
        "attributes": decode_attributes(event.get("attributes")),
        "body": None,
    }


def iter_log_records(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each log record of one logs export request, still raw: `decode_log_record` it."""
    for rl in field(doc, "resourceLogs") or []:
        for sl in field(rl, "scopeLogs") or field(rl, "instrumentationLibraryLogs") or []:
            yield from field(sl, "logRecords") or []


def decode_log_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One OTLP log record as a plain dict (ids hex, body plain, `name` its event name)."""
    attributes = decode_attributes(rec.get("attributes"))
    time_ns = nanos(field(rec, "timeUnixNano")) or nanos(field(rec, "observedTimeUnixNano"))
    return {
        "trace_id": hex_id(field(rec, "traceId"), 16),
        "span_id": hex_id(field(rec, "spanId"), 8),
        "name": field(rec, "eventName") or attributes.pop("event.name", None) or "",
        "time_ns": time_ns,
        "attributes": attributes,
        "body": decode_any(rec.get("body")),
    }


_SCHEMA = """
CREATE TABLE spans (seq INTEGER PRIMARY KEY, trace TEXT NOT NULL, span TEXT NOT NULL,
                    conv TEXT, start INTEGER NOT NULL, data BLOB NOT NULL);
CREATE UNIQUE INDEX spans_id ON spans(trace, span);
CREATE TABLE logs (seq INTEGER PRIMARY KEY, trace TEXT, span TEXT, time INTEGER, data BLOB);
"""
_FINISH = """
CREATE TABLE trace_conv (trace TEXT PRIMARY KEY, conv TEXT);
INSERT OR IGNORE INTO trace_conv SELECT trace, conv FROM spans WHERE conv IS NOT NULL ORDER BY seq;
UPDATE spans SET conv = COALESCE((SELECT conv FROM trace_conv t WHERE t.trace = spans.trace), trace)
    WHERE conv IS NULL;
CREATE INDEX spans_conv ON spans(conv, start, seq);
CREATE INDEX logs_span ON logs(trace, span, time, seq);
CREATE TABLE convs AS SELECT conv, MIN(start) AS first FROM spans GROUP BY conv;
CREATE TABLE traces AS SELECT DISTINCT trace FROM spans;
"""
_JOINED = "EXISTS (SELECT 1 FROM spans s WHERE s.trace = l.trace AND s.span = l.span)"


class Spool:
    """A temporary SQLite file that holds decoded spans and log records until they are read
    back grouped by conversation, so memory stays flat however a conversation's spans are
    spread over the file. A context manager: the file is deleted on exit.

    A span's conversation is its own (`add_spans(..., conversation_of)`), else the first one
    seen on another span of its trace, else its trace id.
    """

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="agentmill-otlp-")
        self.db = sqlite3.connect(Path(self._dir.name) / "spool.sqlite")
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        self.db.execute("PRAGMA cache_size=-16000")  # 16 MB whatever the file's size
        self.db.executescript(_SCHEMA)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.db.close()
        self._dir.cleanup()

    def add_spans(self, spans: list[dict[str, Any]], conversation_of: Callable) -> int:
        """Store decoded spans; returns how many were duplicates (same trace and span id:
        a re-export; the first copy is kept)."""
        before = self.db.total_changes
        self.db.executemany(
            "INSERT OR IGNORE INTO spans (trace, span, conv, start, data) VALUES (?,?,?,?,?)",
            [
                (s["trace_id"], s["span_id"], conversation_of(s), s["start_ns"], orjson.dumps(s))
                for s in spans
            ],
        )
        return len(spans) - (self.db.total_changes - before)

    def add_logs(self, records: list[dict[str, Any]]) -> None:
        self.db.executemany(
            "INSERT INTO logs (trace, span, time, data) VALUES (?,?,?,?)",
            [(r["trace_id"], r["span_id"], r["time_ns"], orjson.dumps(r)) for r in records],
        )

    def finish(self, stats: IngestStats) -> None:
        """Resolve conversations, index for read-back, count traces and (un)joined logs."""
        self.db.executescript(_FINISH)
        stats.read["traces"] += self._scalar("SELECT COUNT(*) FROM traces")
        joined = self._scalar(f"SELECT COUNT(*) FROM logs l WHERE {_JOINED}")
        stats.read["log_records_joined"] += joined
        first = self.db.execute(f"SELECT trace, span FROM logs l WHERE NOT {_JOINED}").fetchone()
        if first is not None:
            unmatched = self._scalar("SELECT COUNT(*) FROM logs") - joined
            stats.skipped["log_without_span"] += unmatched  # never strict: apps log freely
            stats.examples.setdefault("log_without_span", f"trace {first[0]!r} span {first[1]!r}")

    def _scalar(self, sql: str) -> int:
        return int(self.db.execute(sql).fetchone()[0] or 0)

    def conversations(self) -> Iterator[tuple[str, list[tuple[dict, list[dict]]]]]:
        """(conversation, [(span, its log records), ...]) per conversation, conversations in
        order of their first span, spans in start order, log records in time order."""
        for (conv,) in self.db.execute("SELECT conv FROM convs ORDER BY first, conv"):
            cur = self.db.execute(
                "SELECT data FROM spans WHERE conv = ? ORDER BY start, seq", (conv,)
            )
            spans = [orjson.loads(data) for (data,) in cur]
            yield conv, [(s, self._logs(s["trace_id"], s["span_id"])) for s in spans]

    def _logs(self, trace: str, span: str) -> list[dict[str, Any]]:
        cur = self.db.execute(
            "SELECT data FROM logs WHERE trace = ? AND span = ? ORDER BY time, seq", (trace, span)
        )
        return [orjson.loads(data) for (data,) in cur]
