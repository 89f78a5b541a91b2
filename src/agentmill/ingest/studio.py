"""AgentScope Studio's SQLite file -> trajectories (`agentmill ingest agentscope-studio FILE`).

The file is opened read-only (`mode=ro`; also while Studio has it open in WAL mode) and never
changed. Both span_table layouts are read, detected with `PRAGMA table_info(span_table)` and
always selected by column name:

- old (Studio < 1.0.7, column `spanKind`): ISO-8601 times, `run_id`, status 'OK'|'ERROR';
- new (Studio >= 1.0.7, column `spanId`; also old files migrated in place): decimal-text
  nanosecond times rounded by a JS double (ordered as integers), `conversationId`, status
  JSON, scope JSON, parentSpanId '' or NULL for roots.

Spans are read one conversation (run) at a time, through the conversation index (or a
temporary one when the file has none), so memory stays flat in the file's size. Each
conversation goes to the one `rebuild`. Runs come from `run_table` (project, name, timestamp)
for selection and provenance; conversations with no run row (agentscope 2.x exporting to
Studio) are read too, after the runs, in time order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.spans import Span
from agentmill.ingest.studio_rows import NO_CONVERSATION, int_ns, iso_ns, new_span, old_span
from agentmill.records import Trajectory

SOURCE = "agentscope-studio"
_HEADER = b"SQLite format 3\x00"
BATCH = 32  # conversations read per query (one query each cost ~6% more CPU to read)
_FIX = "pass the database.sqlite of AgentScope Studio (~/AgentScope-Studio/database.sqlite)"


@dataclass(frozen=True)
class Layout:
    """Which span_table layout a file has, as the columns to read, in `Span` field order."""

    name: str  # "old" | "new"
    conversation: str  # the column that names the conversation (run)
    columns: tuple[str, ...]


# span id, trace id, parent id, name, start, end, attributes, status, status detail, scope,
# events, conversation, kind hint: None where a layout has no such column.
_NEW = ("spanId", "traceId", "parentSpanId", "name", "startTimeUnixNano", "endTimeUnixNano")
_NEW += ("attributes", "statusCode", "status", "scope", "events", "conversationId", "operationName")
_OLD = ("id", "traceId", "parentSpanId", "name", "startTime", "endTime", "attributes")
_OLD += ("status", "statusMessage", None, "events", "run_id", "spanKind")
_REQUIRED = {"new": _NEW[:5] + ("attributes", "conversationId"), "old": _OLD[:5] + _OLD[6:7]}
_REQUIRED["old"] += ("run_id",)


def read(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[Trajectory]:
    """Trajectories from a Studio database, conversations in run order, turns in time order.

    Raises UserError (before the first record) for a file that is not SQLite, has no
    span_table, has an unknown span_table schema, or has no spans.
    """
    from agentmill.ingest.rebuild import rebuild

    groups = read_spans(path, opts, stats)
    return (t for spans in groups for t in rebuild(spans, stats, opts, SOURCE))


def read_spans(path: Path, opts: IngestOptions, stats: IngestStats) -> Iterator[list[Span]]:
    """The spans of each selected conversation, one list at a time (what `read` rebuilds).
    The file is checked now; the connection closes when the iterator ends."""
    db, layout = open_checked(path)
    return _groups(db, layout, path, opts, stats)


def open_checked(path: Path) -> tuple[sqlite3.Connection, Layout]:
    """A read-only connection to a Studio file with spans, and its layout; UserError (and
    nothing left open) for any other file."""
    db = connect(path)
    try:
        layout = detect_layout(db)
        _check_not_empty(db, path)
    except sqlite3.DatabaseError as e:
        db.close()
        raise unreadable(path, e) from None
    except BaseException:
        db.close()
        raise
    return db, layout


def unreadable(path: Path, e: Exception) -> UserError:
    return UserError(f"{path}: cannot read the database ({e}); {_FIX}, or a copy of it")


class Fetcher:
    """The SQL that selects conversations' rows: `one` for one conversation (`IS ?`, NULL
    included), `many(n)` for n of them. Through an index on the conversation column; a file
    without one (the old layout has none) gets a temporary index, built in SQLite's temp
    store (bounded memory), never in the file. Within a conversation, rows come in table
    order either way."""

    def __init__(self, db: sqlite3.Connection, layout: Layout):
        self.layout = layout
        cols = ", ".join(_q(c) if c else "NULL" for c in layout.columns)
        conv = _q(layout.conversation)
        if _index_on(db, layout.conversation) is not None:
            self._head, self._tail = f"SELECT {cols} FROM main.span_table WHERE {conv}", ""
        else:
            rows = f"SELECT rowid AS rid, {conv} AS conv FROM main.span_table"
            db.execute(f"CREATE TEMP TABLE am_span_conv AS {rows}")
            db.execute("CREATE INDEX temp.am_span_conv_idx ON am_span_conv(conv)")
            inner = "SELECT rid FROM temp.am_span_conv WHERE conv"
            head = f"SELECT {cols} FROM main.span_table WHERE rowid IN ({inner}"
            self._head, self._tail = head, ")"
        self.one = f"{self._head} IS ?{self._tail}"
        self._many: dict[int, str] = {}

    def many(self, n: int) -> str:
        sql = self._many.get(n)
        if sql is None:
            sql = self._many[n] = f"{self._head} IN ({','.join('?' * n)}){self._tail}"
        return sql


def _groups(
    db: sqlite3.Connection, layout: Layout, path: Path, opts: IngestOptions, stats: IngestStats
) -> Iterator[list[Span]]:
    try:
        fetch = Fetcher(db, layout)
        yield from conversation_spans(db, fetch, units(db, layout, path, opts, stats), stats, opts)
    except sqlite3.DatabaseError as e:  # e.g. a damaged page: what was read is kept
        raise unreadable(path, e) from None
    finally:
        db.close()


def units(
    db: sqlite3.Connection, layout: Layout, path: Path, opts: IngestOptions, stats: IngestStats
) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """The selected conversations in output order, each with its provenance: all a reader
    needs to read one (a worker process of `ingest.parallel` opens the file itself)."""
    stats.read["runs"] += count_runs(db)
    for conv, run in conversations(db, layout, opts):
        yield conv, _origin(path, layout, run)


def conversation_spans(
    db: sqlite3.Connection,
    fetch: Fetcher,
    some: Iterable[tuple[str | None, dict[str, Any]]],
    stats: IngestStats,
    opts: IngestOptions,
) -> Iterator[list[Span]]:
    """The spans of each of `some` conversations (from `units`), one list per conversation
    in their order; the no-conversation bucket gives one list per trace. The rows of `BATCH`
    conversations at a time are read with one query."""
    batch: list[tuple[str | None, dict[str, Any]]] = []
    for unit in some:
        batch.append(unit)
        if len(batch) == BATCH:
            yield from _batch_spans(db, fetch, batch, stats, opts)
            batch = []
    if batch:
        yield from _batch_spans(db, fetch, batch, stats, opts)


def _batch_spans(
    db: sqlite3.Connection,
    fetch: Fetcher,
    batch: list[tuple[str | None, dict[str, Any]]],
    stats: IngestStats,
    opts: IngestOptions,
) -> Iterator[list[Span]]:
    keys = [conv for conv, _ in batch if conv is not None and conv not in NO_CONVERSATION]
    rows: dict[str, list[Any]] = {k: [] for k in keys}
    if keys:
        for row in db.execute(fetch.many(len(keys)), keys):
            key = row[11]  # the conversation column (ids are listed as text)
            rows[key if type(key) is str else str(key)].append(row)
    for conv, origin in batch:
        if conv is None or conv in NO_CONVERSATION:
            yield from _bucket(db, fetch, conv, origin, stats, opts)
        else:
            stats.read["conversations"] += 1
            yield list(_spans(rows.pop(conv, []), fetch.layout, origin, stats, opts.strict))


def _bucket(
    db: sqlite3.Connection,
    fetch: Fetcher,
    conv: str | None,
    origin: dict[str, Any],
    stats: IngestStats,
    opts: IngestOptions,
) -> Iterator[list[Span]]:
    """Spans Studio filed under no conversation ('unknown', agentscope 2.x's
    '[no_session_id]'): skipped unread when none is an agent span (agentscope's format and
    embedding spans land there), else each trace is a conversation of its own."""
    layout = fetch.layout
    if not _has_agents(db, layout, conv):
        stats.skip("no_agent_turns", f"{origin['file']}: conversation {conv!r}")
        return
    by_trace = _by_trace_sql(db, layout)
    if by_trace is None:  # no trace index to read a trace at a time: one conversation
        sql, keys = fetch.one, [(conv,)]
    else:
        sql = by_trace
        where = f"{_q(layout.conversation)} IS ?"
        traces = db.execute(f"SELECT DISTINCT traceId FROM span_table WHERE {where}", (conv,))
        keys = ((t, conv) for (t,) in traces)
    for key in keys:
        stats.read["conversations"] += 1
        yield list(_spans(db.execute(sql, key), layout, origin, stats, opts.strict))


def _has_agents(db: sqlite3.Connection, layout: Layout, conv: str | None) -> bool:
    column, values = ("operationName", "'invoke_agent', 'create_agent'")
    if layout.name == "old":
        column, values = "spanKind", "'AGENT'"
    if column not in layout.columns:
        return True
    where = f"{_q(layout.conversation)} IS ? AND {_q(column)} IN ({values})"
    sql = f"SELECT 1 FROM span_table WHERE {where} LIMIT 1"
    return db.execute(sql, (conv,)).fetchone() is not None


def _by_trace_sql(db: sqlite3.Connection, layout: Layout) -> str | None:
    index = _index_on(db, "traceId")
    if index is None:
        return None
    cols = ", ".join(_q(c) if c else "NULL" for c in layout.columns)
    where = f"traceId = ? AND {_q(layout.conversation)} IS ?"
    return f"SELECT {cols} FROM main.span_table INDEXED BY {_q(index)} WHERE {where}"


# --- opening and checking ------------------------------------------------------------------


def connect(path: Path) -> sqlite3.Connection:
    """A read-only connection; UserError when `path` is not an SQLite file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: not a file; {_FIX}")
    with path.open("rb") as f:
        header = f.read(16)
    if not header:
        raise UserError(f"{path}: empty file, no spans to read; {_FIX}")
    if header != _HEADER:
        raise UserError(f"{path}: not an SQLite database; {_FIX}")
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=30, check_same_thread=False)
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as e:
        raise unreadable(path, e) from None
    return db


def detect_layout(db: sqlite3.Connection) -> Layout:
    """The span_table layout; UserError when there is none or it is not one Studio wrote."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(span_table)")}
    if not columns:
        raise UserError(f"no span_table in this database: not an AgentScope Studio file; {_FIX}")
    name = "new" if "spanId" in columns else "old" if "spanKind" in columns else None
    if name is None or not set(_REQUIRED[name]) <= columns:
        raise UserError(
            f"unknown span_table schema (columns: {', '.join(sorted(columns))}); "
            "expected AgentScope Studio's (spanKind before v1.0.7, spanId since); "
            f"{_FIX}, or report the Studio version"
        )
    wanted = _NEW if name == "new" else _OLD
    cols = tuple(c if c in columns else None for c in wanted)
    return Layout(name, "conversationId" if name == "new" else "run_id", cols)  # type: ignore[arg-type]


def _check_not_empty(db: sqlite3.Connection, path: Path) -> None:
    if db.execute("SELECT 1 FROM span_table LIMIT 1").fetchone() is None:
        raise UserError(
            f"{path}: span_table has no spans; trace your agents to Studio first "
            "(agentscope.init(studio_url=...)) or pass a database that has runs"
        )


# --- runs and conversations ----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    id: str
    project: str | None
    name: str | None
    timestamp: str | None


def count_runs(db: sqlite3.Connection) -> int:
    """Rows of run_table (0 when there is none, as with agentscope 2.x)."""
    if not _run_columns(db):
        return 0
    return int(db.execute("SELECT count(*) FROM run_table").fetchone()[0])


def _run_columns(db: sqlite3.Connection) -> list[str]:
    """run_table's project, name, timestamp columns ('NULL' where missing); [] without one."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(run_table)")}
    if "id" not in columns:
        return []
    return [_q(c) if c in columns else "NULL" for c in ("project", "name", "timestamp")]


def conversations(
    db: sqlite3.Connection, layout: Layout, opts: IngestOptions
) -> Iterator[tuple[str | None, Run | None]]:
    """The selected conversations, streamed: runs by their timestamp, then conversations
    without a run row by their first span. SQLite groups and sorts (in its own bounded temp
    store), so nothing here grows with the file."""
    sql = _conversations_sql(db, layout, opts.since is not None or opts.until is not None)
    for cid, run_id, project, name, stamp, first, last in db.execute(sql):
        key = None if cid is None else str(cid)
        run = Run(str(run_id), project, name, stamp) if run_id is not None else None
        lo = _nanos(layout, first) if first is not None else None
        hi = _nanos(layout, last) if last is not None else None
        if _selected(key, run, lo, hi, opts):
            yield key, run


def _conversations_sql(db: sqlite3.Connection, layout: Layout, window: bool) -> str:
    """Conversation ids come from the conversation index alone; a conversation's first/last
    span time (which means visiting its rows) only where needed: run-less conversations'
    order, and the since/until window. A file without that index is scanned once."""
    conv, start = _q(layout.conversation), _q(layout.columns[4])  # type: ignore[arg-type]
    if layout.name == "new":
        start = f"CAST({start} AS INTEGER)"
    run_cols = _run_columns(db)
    if run_cols:
        project, name, stamp = (f"r.{c}" if c != "NULL" else c for c in run_cols)
        run_id, joined = "r.id", "LEFT JOIN run_table AS r ON r.id = s.conv"
    else:
        run_id = project = name = stamp = "NULL"
        joined = ""
    if _index_on(db, layout.conversation) is None:
        grouped = f"SELECT {conv} AS conv, MIN({start}) AS lo, MAX({start}) AS hi FROM span_table"
        first, last = "s.lo", "s.hi"
    else:
        grouped = f"SELECT {conv} AS conv FROM span_table"
        span_of = f"FROM span_table AS t WHERE t.{conv} IS s.conv"
        first, last = f"(SELECT MIN({start}) {span_of})", f"(SELECT MAX({start}) {span_of})"
    lo, hi = (first, last) if window else ("NULL", "NULL")
    return (
        f"SELECT s.conv, {run_id}, {project}, {name}, {stamp}, {lo}, {hi} "
        f"FROM ({grouped} GROUP BY {conv}) AS s {joined} "
        f"ORDER BY ({stamp} IS NULL), {stamp}, CASE WHEN {stamp} IS NULL THEN {first} END, s.conv"
    )


def _selected(
    key: str | None, run: Run | None, lo: int | None, hi: int | None, opts: IngestOptions
) -> bool:
    if opts.projects and (run is None or run.project not in opts.projects):
        return False
    if opts.runs and key not in opts.runs and (run is None or run.name not in opts.runs):
        return False
    if opts.since is not None and hi is not None and hi < _to_ns(opts.since):
        return False
    return not (opts.until is not None and lo is not None and lo >= _to_ns(opts.until))


def _to_ns(when: datetime) -> int:
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1e9)


# --- spans ---------------------------------------------------------------------------------


def _index_on(db: sqlite3.Connection, column: str) -> str | None:
    """The name of an index of span_table whose first column is `column`."""
    for row in db.execute("PRAGMA index_list(span_table)").fetchall():
        first = db.execute(f"PRAGMA index_info({_q(row[1])})").fetchone()
        if first is not None and first[2] == column:
            return str(row[1])
    return None


def _spans(
    rows: Iterable[Any],
    layout: Layout,
    origin: dict[str, Any],
    stats: IngestStats,
    strict: bool,
) -> Iterator[Span]:
    to_span = new_span if layout.name == "new" else old_span
    n = 0
    for row in rows:
        n += 1
        try:
            attributes = orjson.loads(row[6])
            if not isinstance(attributes, dict):
                raise ValueError("attributes is not a JSON object")
        except (orjson.JSONDecodeError, TypeError, ValueError) as e:
            where = f"{origin['file']}: span_table row {row[0]} ({e})"
            stats.skip("bad_attributes", where, strict)
            continue
        yield to_span(row, attributes, origin)
    stats.read["spans"] += n


def _origin(path: Path, layout: Layout, run: Run | None) -> dict[str, Any]:
    origin: dict[str, Any] = {"file": str(path), "layout": layout.name}
    if run is not None:
        origin.update(project=run.project, run_name=run.name, run_timestamp=run.timestamp)
    return origin


def _nanos(layout: Layout, value: Any) -> int:
    return int_ns(value) if layout.name == "new" else iso_ns(value)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
