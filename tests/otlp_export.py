"""Real OpenTelemetry SDK spans and log records -> OTLP/JSON files, for the otel ingester's tests.

The exporters serialize the SDK's `ReadableSpan` / `ReadableLogRecord` to the OTLP/JSON
encoding of opentelemetry-proto (camelCase field names, lowercase hex ids, 64-bit integers as
decimal strings, enums as numbers, attribute values wrapped in `AnyValue`), one export request
per line, the way the OpenTelemetry collector's file exporter writes them.

    capture = OtlpCapture(tmp_path / "traces.jsonl", tmp_path / "logs.jsonl")
    with capture.tracer.start_as_current_span("chat m") as span:
        capture.logger.emit(event_name="gen_ai.user.message", body={"content": "hi"})
    capture.flush()

`variant()` rewrites a written file the way other writers do (snake_case names, base64 ids,
integers as numbers), to check the reader accepts them.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    LogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)


def any_value(value: Any) -> dict[str, Any]:
    """A Python value as an OTLP/JSON `AnyValue`."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode()}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {} if value is None else {"stringValue": str(value)}


def key_values(attributes: Any) -> list[dict[str, Any]]:
    return [{"key": k, "value": any_value(v)} for k, v in (attributes or {}).items()]


def _scope(scope: Any) -> dict[str, Any]:
    out = {"name": scope.name if scope else ""}
    if scope and scope.version:
        out["version"] = scope.version
    return out


def span_json(span: ReadableSpan) -> dict[str, Any]:
    """One SDK span as an OTLP/JSON `Span`."""
    ctx = span.get_span_context()
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK counts from 0, OTLP from 1 (INTERNAL)
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": key_values(span.attributes),
        "events": [
            {
                "timeUnixNano": str(e.timestamp),
                "name": e.name,
                "attributes": key_values(e.attributes),
            }
            for e in span.events
        ],
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.status.description:
        out["status"]["message"] = span.status.description
    return out


def spans_request(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An ExportTraceServiceRequest: spans grouped by resource, then by scope."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for span in spans:
        res = json.dumps(dict(span.resource.attributes), sort_keys=True)
        scope = _scope(span.instrumentation_scope)
        group = groups.setdefault((res, json.dumps(scope)), {"scope": scope, "spans": []})
        group["spans"].append(span_json(span))
    by_res: dict[str, list[dict[str, Any]]] = {}
    for (res, _), group in groups.items():
        by_res.setdefault(res, []).append(group)
    return {
        "resourceSpans": [
            {"resource": {"attributes": key_values(json.loads(r))}, "scopeSpans": g}
            for r, g in by_res.items()
        ]
    }


def log_json(rec: ReadableLogRecord) -> dict[str, Any]:
    """One SDK log record as an OTLP/JSON `LogRecord`."""
    lr = rec.log_record
    out: dict[str, Any] = {
        "timeUnixNano": str(lr.timestamp or lr.observed_timestamp),
        "observedTimeUnixNano": str(lr.observed_timestamp),
        "body": any_value(lr.body),
        "attributes": key_values(lr.attributes),
    }
    if lr.event_name:
        out["eventName"] = lr.event_name
    if lr.trace_id:
        out["traceId"] = f"{lr.trace_id:032x}"
        out["spanId"] = f"{lr.span_id:016x}"
    return out


def logs_request(records: Sequence[ReadableLogRecord]) -> dict[str, Any]:
    scope_logs = [
        {"scope": _scope(r.instrumentation_scope), "logRecords": [log_json(r)]} for r in records
    ]
    resource = records[0].resource.attributes if records else {}
    return {
        "resourceLogs": [
            {"resource": {"attributes": key_values(resource)}, "scopeLogs": scope_logs}
        ]
    }


class JsonLinesSpanExporter(SpanExporter):
    """Appends one OTLP/JSON ExportTraceServiceRequest per `export` call to `path`."""

    def __init__(self, path: Path):
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.path.open("a") as f:
            f.write(json.dumps(spans_request(spans)) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class JsonLinesLogExporter(LogRecordExporter):
    """Appends one OTLP/JSON ExportLogsServiceRequest per `export` call to `path`."""

    def __init__(self, path: Path):
        self.path = path

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        with self.path.open("a") as f:
            f.write(json.dumps(logs_request(batch)) + "\n")
        return LogRecordExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class OtlpCapture:
    """A real TracerProvider (and LoggerProvider) writing OTLP/JSON lines. `batch=False`
    exports each span on its own line (a conversation spread over many lines)."""

    def __init__(
        self, traces: Path, logs: Path | None = None, batch: bool = True, scope: str = "app"
    ):
        resource = Resource.create({"service.name": "otel-test-app"})
        self.traces, self.logs = traces, logs
        exporter = JsonLinesSpanExporter(traces)
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(processor)
        self.tracer = self.tracer_provider.get_tracer(scope, "1.0")
        self.logger_provider = LoggerProvider(resource=resource)
        if logs is not None:
            self.logger_provider.add_log_record_processor(
                SimpleLogRecordProcessor(JsonLinesLogExporter(logs))
            )
        self.logger = self.logger_provider.get_logger(scope, "1.0")

    def flush(self) -> None:
        self.tracer_provider.force_flush()
        self.logger_provider.force_flush()
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


# --- rewrites the way other OTLP/JSON writers spell things ---------------------------------

_ID_SIZES = {"traceId": 16, "spanId": 8, "parentSpanId": 8}


def _walk(node: Any, fn: Callable[[str, Any], tuple[str, Any]]) -> Any:
    if isinstance(node, list):
        return [_walk(v, fn) for v in node]
    if isinstance(node, dict):
        return dict(fn(k, _walk(v, fn)) for k, v in node.items())
    return node


def b64_ids(key: str, value: Any) -> tuple[str, Any]:
    """protobuf json_format: `bytes` ids as base64."""
    if key in _ID_SIZES and isinstance(value, str) and value:
        return key, base64.b64encode(bytes.fromhex(value)).decode()
    return key, value


def snake_case(key: str, value: Any) -> tuple[str, Any]:
    """json_format with `preserving_proto_field_name=True`."""
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(), value


def int_numbers(key: str, value: Any) -> tuple[str, Any]:
    """Writers that emit 64-bit integers as JSON numbers."""
    if (key.endswith("UnixNano") or key == "intValue") and isinstance(value, str):
        return key, int(value)
    return key, value


def variant(src: Path, dst: Path, *rewrites: Callable[[str, Any], tuple[str, Any]]) -> Path:
    """Copy an OTLP/JSON lines file with each line rewritten by `rewrites` in order."""
    with src.open() as f, dst.open("w") as out:
        for line in f:
            doc = json.loads(line)
            for fn in rewrites:
                doc = _walk(doc, fn)
            out.write(json.dumps(doc) + "\n")
    return dst
