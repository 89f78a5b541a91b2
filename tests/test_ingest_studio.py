"""AgentScope Studio SQLite files -> trajectories, through `read_traces("agentscope-studio", ...)`.

Every database is a real SQLite file built by tests/studio_db.py the way Studio fills it: old
layout (Studio < 1.0.7), new layout (live ingest, old protocol converted on the way in), and
old rows migrated in place. Expected dialogues come from the scripted runs alone.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from studio_db import (
    RunScript,
    Step,
    Turn,
    build_db,
    create_tables,
    expected_dialogue,
    insert_spans,
    sample_run,
    spans_of,
    write_run,
)

from agentmill.errors import UserError
from agentmill.ingest import IngestOptions, IngestStats, read_traces
from agentmill.ingest import span_messages as sm
from agentmill.records import Message, Trajectory

FORMAT = "agentscope-studio"
# (layout, protocol, version, prompts captured)
STYLES = [
    ("old", "old", "", True),
    ("migrated", "old", "", True),
    ("new", "old", "", True),  # old protocol converted at ingest by Studio >= 1.0.7
    ("new", "genai", "1.0.9", True),  # agent messages as ONE object
    ("new", "genai", "1.0.12", True),  # ... as a list
    ("new", "as2", "2.0.4", False),  # chat spans carry no prompt
    ("new", "as2", "2.0.8", True),  # prompt in parts form
    ("new", "as2", "2.0.11", True),  # tool results as JSON objects
]


def ingest(path: Path, stats: IngestStats | None = None, **opts: Any) -> list[Trajectory]:
    return list(read_traces(FORMAT, path, IngestOptions(**opts), stats or IngestStats()))


def dialogue(t: Trajectory) -> list[dict[str, Any]]:
    return [m.to_dict() for m in t.messages]


def expected(run: RunScript, turn: int, system: bool = True) -> list[dict[str, Any]]:
    return [Message.model_validate(m).to_dict() for m in expected_dialogue(run, turn, system)]


def db_of(
    tmp_path: Path,
    runs: list[RunScript],
    layout: str = "new",
    protocol: str = "genai",
    version: str = "",
) -> Path:
    return build_db(tmp_path / "database.sqlite", runs, layout, protocol, version)


@pytest.mark.parametrize(("layout", "protocol", "version", "prompts"), STYLES)
def test_every_layout_and_attribute_style_rebuilds_message_by_message(
    tmp_path: Path, layout: str, protocol: str, version: str, prompts: bool
) -> None:
    run = sample_run(project="shop", name="friday-run")
    stats = IngestStats()
    got = ingest(db_of(tmp_path, [run], layout, protocol, version), stats)
    assert [dialogue(t) for t in got] == [expected(run, 0, prompts), expected(run, 1, prompts)]
    assert [t.final_answer for t in got] == [
        run.turns[0].steps[-1].text,
        run.turns[1].steps[-1].text,
    ]
    steps = [m.usage.to_dict() for m in got[0].messages if m.usage]
    assert steps == [
        {"prompt_tokens": 120, "completion_tokens": 30},
        {"prompt_tokens": 200, "completion_tokens": 40},
        {"prompt_tokens": 260, "completion_tokens": 20},
    ]
    assert got[0].usage.to_dict() == {"prompt_tokens": 580, "completion_tokens": 90}
    assert [t["function"]["name"] for t in got[0].tools] == ["search", "calc"]
    assert got[0].tools[0]["function"]["parameters"]["properties"] == {"query": {"type": "string"}}
    assert got[0].agent.tool_errors == 1 and got[0].agent.by_tool == {"calc": 1, "search": 2}
    assert got[0].model == "qwen-max" and got[0].metadata["agent_name"] == "Friday"
    assert [t.metadata["prompt_check"] for t in got] == ["agree" if prompts else "no_prompt"] * 2
    assert stats.read["missing_inputs"] == (0 if prompts else 4)
    assert stats.read["conversations"] == 1 and stats.read["spans"] >= 9 and stats.built == 2
    assert all(reason == "no_agent_turns" for reason in stats.skipped)  # format spans only


@pytest.mark.parametrize(("layout", "protocol", "version", "prompts"), STYLES)
def test_provenance(
    tmp_path: Path, layout: str, protocol: str, version: str, prompts: bool
) -> None:
    path = db_of(
        tmp_path, [sample_run(project="shop", name="friday-run")], layout, protocol, version
    )
    got = ingest(path)
    p = got[1].provenance
    assert (p.source, p.file, p.source_id) == (FORMAT, str(path), "run-1")
    assert p.extra["project"] == "shop" and p.extra["run_name"] == "friday-run"
    assert p.extra["layout"] == ("old" if layout == "old" else "new") and p.extra["turn"] == 1
    assert p.extra["agent_span_id"] == p.extra["span_ids"][0] and len(p.extra["span_ids"]) == 2
    assert (
        len(p.extra["trace_id"]) == 32
        and got[0].provenance.extra["trace_id"] != p.extra["trace_id"]
    )


def test_multi_turn_context_is_the_earlier_turns_in_order(tmp_path: Path) -> None:
    run = sample_run()
    run.turns.append(Turn("Thanks! One more: 2+2?", [Step("Four.")]))
    got = ingest(db_of(tmp_path, [run]))
    for before, after in zip(got, got[1:], strict=False):
        assert dialogue(after)[: len(before.messages)] == [_context(m) for m in dialogue(before)]
    assert [t.provenance.extra["turn"] for t in got] == [0, 1, 2]
    assert len({t.task_id for t in got}) == 3


def _context(m: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k not in ("usage", "reasoning")}


@pytest.mark.parametrize("protocol", ["old", "genai", "as2"])
def test_the_last_llm_prompt_agrees_with_the_rebuilt_dialogue(
    tmp_path: Path, protocol: str
) -> None:
    """Read each turn's last chat span straight from the file: its prompt, converted, is the
    trajectory's dialogue up to that call."""
    path = db_of(tmp_path, [sample_run()], "new", protocol)
    got = ingest(path)
    db = sqlite3.connect(path)
    for t in got:
        [attrs] = db.execute(
            "SELECT attributes FROM span_table WHERE operationName = 'chat' AND traceId = ? "
            "ORDER BY CAST(startTimeUnixNano AS INTEGER) DESC LIMIT 1",
            (t.provenance.extra["trace_id"],),
        ).fetchone()
        attrs = json.loads(attrs)
        raw = (
            attrs["gen_ai"]["input"]["messages"]
            if protocol == "as2"
            else attrs["agentscope"]["function"]["input"]["args"][0]
        )
        prompt = [Message.model_validate(m).to_dict() for m in sm.from_any(raw)]
        assert [_context(m) for m in dialogue(t)[: len(prompt)]] == prompt
        assert len(prompt) == len(t.messages) - 1  # then only the answer
    db.close()


def test_rounded_nanosecond_times_and_missing_parent(tmp_path: Path) -> None:
    run = sample_run(orphan_turn=0)
    path = db_of(tmp_path, [run])
    db = sqlite3.connect(path)
    starts = [r[0] for r in db.execute("SELECT startTimeUnixNano FROM span_table")]
    db.close()
    assert all(s.endswith("00") and int(s) % 100 == 0 for s in starts)  # a JS double's digits
    stats = IngestStats()
    got = ingest(path, stats)
    assert [dialogue(t) for t in got] == [expected(run, 0), expected(run, 1)]
    assert stats.read["missing_parent"] == 1 and got[0].provenance.extra["missing_parent"]


def test_selection_by_project_run_and_time(tmp_path: Path) -> None:
    day = datetime(2025, 11, 20, tzinfo=UTC)
    runs = [
        sample_run("run-a", project="shop", name="alpha", start=day.replace(hour=9)),
        sample_run("run-b", project="bank", name="beta", start=day.replace(hour=10)),
        sample_run("run-c", project="shop", name="gamma", start=day.replace(hour=11)),
    ]
    path = db_of(tmp_path, runs)

    def ids(**opts: Any) -> list[str]:
        return [
            f"{t.provenance.source_id}/{t.provenance.extra['turn']}" for t in ingest(path, **opts)
        ]

    assert ids() == ["run-a/0", "run-a/1", "run-b/0", "run-b/1", "run-c/0", "run-c/1"]
    assert ids(projects=["shop"]) == ["run-a/0", "run-a/1", "run-c/0", "run-c/1"]
    assert ids(runs=["run-b", "gamma"]) == ["run-b/0", "run-b/1", "run-c/0", "run-c/1"]
    assert ids(since=day.replace(hour=10), until=day.replace(hour=11)) == ["run-b/0", "run-b/1"]
    assert ids(since=day.replace(hour=10, second=1).replace(tzinfo=None)) == [
        "run-b/1",
        "run-c/0",
        "run-c/1",
    ]


def test_conversations_in_run_timestamp_order_then_runless(tmp_path: Path) -> None:
    day = datetime(2025, 11, 20, tzinfo=UTC)
    runs = [
        sample_run("zzz", start=day.replace(hour=8)),
        sample_run("aaa", start=day.replace(hour=12)),
        sample_run("mmm", start=day.replace(hour=10)),
    ]
    path = db_of(tmp_path, runs)
    assert [t.provenance.source_id for t in ingest(path)][::2] == ["zzz", "mmm", "aaa"]


def test_agentscope_2x_without_run_rows_and_without_session(tmp_path: Path) -> None:
    """2.x posts spans only: no run rows; spans without a session go to '[no_session_id]'
    and each of their traces is rebuilt on its own."""
    named = sample_run("session-42", with_run_row=False)
    nameless = RunScript(
        "[no_session_id]",
        [Turn("Hi", [Step("Hello.")]), Turn("Bye", [Step("Bye.")])],
        with_run_row=False,
    )
    path = db_of(tmp_path, [named, nameless], "new", "as2", "2.0.8")
    stats = IngestStats()
    got = ingest(path, stats)
    assert [t.provenance.source_id for t in got[:2]] == ["session-42", "session-42"]
    assert [dialogue(t) for t in got[:2]] == [expected(named, 0), expected(named, 1)]
    alone = got[2:]
    assert [t.final_answer for t in alone] == ["Hello.", "Bye."]
    assert [t.provenance.source_id for t in alone] == [
        t.provenance.extra["trace_id"] for t in alone
    ]
    assert [dialogue(t) for t in alone] == [expected(nameless, 0), expected(nameless, 1)]
    assert "project" not in got[0].provenance.extra and stats.read["runs"] == 0


def test_null_parents_and_a_numeric_session_id(tmp_path: Path) -> None:
    """Roots may have parentSpanId NULL as well as ''; a 2.x session id that is all digits
    is turned into a number by Studio's JSON parsing (conversationId keeps the text)."""
    run = sample_run("20251120", with_run_row=False)
    path = db_of(tmp_path, [run], "new", "as2", "2.0.8")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE span_table SET parentSpanId = NULL WHERE parentSpanId = ''")
        [(conv,)] = db.execute(
            "SELECT DISTINCT json_extract(attributes, '$.gen_ai.conversation.id') FROM span_table"
        ).fetchall()
    assert conv == 20251120
    got = ingest(path)
    assert [dialogue(t) for t in got] == [expected(run, 0), expected(run, 1)]
    assert got[0].provenance.source_id == "20251120" and got[0].metadata["provider"] == "dashscope"


def test_unknown_conversation_without_agents_is_skipped_unread(tmp_path: Path) -> None:
    stats = IngestStats()
    got = ingest(db_of(tmp_path, [sample_run()], "new", "genai"), stats)  # 1.x format spans
    assert len(got) == 2 and stats.skipped["no_agent_turns"] == 1
    assert "unknown" in stats.examples["no_agent_turns"]
    db = sqlite3.connect(tmp_path / "database.sqlite")
    count = "SELECT count(*) FROM span_table WHERE conversationId {}"
    [(unknown,)] = db.execute(count.format("= 'unknown'")).fetchall()
    [(known,)] = db.execute(count.format("!= 'unknown'")).fetchall()
    db.close()
    assert unknown == 4 and stats.read["spans"] == known  # the format spans were never read


# --- the user's file ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["old", "new"])
def test_reads_without_changing_the_file_even_while_studio_writes(
    tmp_path: Path, layout: str
) -> None:
    protocol = "old" if layout == "old" else "genai"
    path = db_of(tmp_path, [sample_run()], layout, protocol)
    studio = sqlite3.connect(path)  # Studio: WAL mode, a write transaction open
    studio.execute("PRAGMA journal_mode=WAL")
    studio.execute("BEGIN IMMEDIATE")
    insert_spans(studio, spans_of(sample_run("run-uncommitted"), protocol), layout)
    assert Path(f"{path}-wal").exists()
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    got = ingest(path)
    assert [t.provenance.source_id for t in got] == ["run-1", "run-1"]  # committed data only
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    studio.rollback()
    studio.close()
    reader = sqlite3.connect(path)
    names = {r[0] for r in reader.execute("SELECT name FROM sqlite_master")}
    reader.close()
    assert not any(n.startswith("am_") for n in names)  # the temporary index stayed temporary


def test_reingest_and_copies_give_the_same_records(tmp_path: Path) -> None:
    path = db_of(tmp_path, [sample_run()])
    copy = tmp_path / "elsewhere" / "copy.sqlite"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    first, again, copied = ingest(path), ingest(path), ingest(copy)
    assert [t.to_dict() for t in first] == [t.to_dict() for t in again]
    assert [t.id for t in first] == [t.id for t in copied]
    assert [t.task_id for t in first] == [t.task_id for t in copied]
    for t in first:
        assert Trajectory.from_json(t.to_json()) == t


# --- bad input ------------------------------------------------------------------------------


def test_not_sqlite_is_a_one_line_user_error(tmp_path: Path) -> None:
    path = tmp_path / "traces.jsonl"
    path.write_text('{"resourceSpans": []}\n')
    with pytest.raises(UserError, match=r"not an SQLite database; pass the database\.sqlite") as e:
        ingest(path)
    assert e.value.exit_code == 2
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    with pytest.raises(UserError, match="empty file"):
        ingest(empty)
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 16)
    with pytest.raises(UserError, match="damaged.sqlite: cannot read the database"):
        ingest(damaged)


def test_no_span_table_unknown_schema_and_empty_table(tmp_path: Path) -> None:
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE notes (id TEXT)")
    with pytest.raises(UserError, match="no span_table in this database"):
        ingest(other)
    odd = tmp_path / "odd.sqlite"
    with sqlite3.connect(odd) as db:
        db.execute("CREATE TABLE span_table (id TEXT, payload TEXT)")
    with pytest.raises(UserError, match=r"unknown span_table schema \(columns: id, payload\)"):
        ingest(odd)
    fresh = tmp_path / "fresh.sqlite"
    db = sqlite3.connect(fresh)
    create_tables(db, "new")
    db.commit()
    db.close()
    with pytest.raises(UserError, match="span_table has no spans; trace your agents to Studio"):
        ingest(fresh)
    for message in (str(e) for e in _errors(other, odd, fresh)):
        assert "\n" not in message


def _errors(*paths: Path) -> list[UserError]:
    out = []
    for p in paths:
        try:
            ingest(p)
        except UserError as e:
            out.append(e)
    return out


@pytest.mark.parametrize("layout", ["old", "new"])
def test_corrupt_attributes_json_is_a_counted_skip_or_strict_error(
    tmp_path: Path, layout: str
) -> None:
    run = sample_run()
    path = db_of(tmp_path, [run], layout, "old" if layout == "old" else "genai")
    db = sqlite3.connect(path)
    op = "spanKind = 'TOOL'" if layout == "old" else "operationName = 'execute_tool'"
    [(span_id,)] = db.execute(f"SELECT id FROM span_table WHERE {op} LIMIT 1").fetchall()
    db.execute("UPDATE span_table SET attributes = '{\"gen_ai\": {' WHERE id = ?", (span_id,))
    db.commit()
    db.close()
    stats = IngestStats()
    got = ingest(path, stats)
    assert len(got) == 2 and stats.skipped["bad_attributes"] == 1
    assert span_id in stats.examples["bad_attributes"]
    with pytest.raises(
        UserError,
        match=rf"span_table row {span_id}.*bad_attributes; fix the input or drop --strict",
    ):
        ingest(path, strict=True)


def test_runs_written_one_by_one_with_a_reused_connection(tmp_path: Path) -> None:
    """The builder's incremental path (the benchmark's) makes the same file as build_db."""
    path = tmp_path / "inc.sqlite"
    db = sqlite3.connect(path)
    create_tables(db, "new")
    write_run(db, sample_run(), "new", "genai")
    db.commit()
    db.close()
    assert [dialogue(t) for t in ingest(path)] == [
        expected(sample_run(), 0),
        expected(sample_run(), 1),
    ]


# --- rows of many conversations interleaved in table order ------------------------------------


def _shuffled_db(path: Path, runs: list[RunScript], layout: str, seed: int = 7) -> Path:
    """The runs' rows, with every span row in a random table (rowid) order: conversations
    interleaved, and not in run order."""
    import random

    protocol = "old" if layout == "old" else "genai"
    db = sqlite3.connect(path)
    create_tables(db, layout)
    spans = []
    for run in runs:
        stamp = run.start.strftime("%Y-%m-%d %H:%M:%S.000")
        if run.with_run_row:
            db.execute(
                "INSERT INTO run_table VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run.run_id, run.project, run.name, stamp, "/runs", 1, "done"),
            )
        spans += spans_of(run, protocol)
    random.Random(seed).shuffle(spans)
    for s in spans:  # one row at a time: rowids follow this order
        insert_spans(db, [s], layout)
    db.commit()
    db.close()
    return path


def _records(path: Path, stats: IngestStats | None = None, **opts: Any) -> list[dict[str, Any]]:
    out = []
    for t in ingest(path, stats, **opts):
        d = t.to_dict()
        d["provenance"].pop("file")
        out.append(d)
    return out


def _interleaved_runs() -> list[RunScript]:
    day = datetime(2025, 11, 20, tzinfo=UTC)
    runs = [sample_run(f"run-{i}", start=day.replace(hour=12 - i)) for i in range(5)]
    runs[1].turns.append(Turn("Thanks! One more: 2+2?", [Step("Four.")]))
    runs.append(sample_run("runless-b", with_run_row=False, start=day.replace(hour=2)))
    runs.append(sample_run("runless-a", with_run_row=False, start=day.replace(hour=1)))
    return runs


@pytest.mark.parametrize("layout", ["new", "old"])
def test_interleaved_rows_rebuild_as_contiguous_ones_in_run_order(
    tmp_path: Path, layout: str
) -> None:
    """Rows of many conversations interleaved in table order, in no run order: the same
    records, in the same order (runs by timestamp, then run-less by first span), as a file
    written run by run; the turns of a conversation stay in order."""
    runs = _interleaved_runs()
    protocol = "old" if layout == "old" else "genai"
    contiguous = build_db(tmp_path / "contiguous.sqlite", runs, layout, protocol)
    mixed = _shuffled_db(tmp_path / "mixed.sqlite", runs, layout)
    want = _records(contiguous)
    assert [(d["provenance"]["source_id"], d["provenance"]["extra"]["turn"]) for d in want] == [
        *((f"run-{i}", t) for i in (4, 3, 2) for t in (0, 1)),
        ("run-1", 0), ("run-1", 1), ("run-1", 2), ("run-0", 0), ("run-0", 1),
        ("runless-a", 0), ("runless-a", 1), ("runless-b", 0), ("runless-b", 1),
    ]  # fmt: skip
    assert _records(mixed) == want
    selected = {"runs": ["run-3", "runless-b"], "projects": ["demo"]}
    assert _records(mixed, **selected) == _records(contiguous, **selected)


def test_a_narrow_selection_reads_only_its_conversations(tmp_path: Path) -> None:
    runs = _interleaved_runs()
    path = _shuffled_db(tmp_path / "mixed.sqlite", runs, "new")
    stats = IngestStats()
    got = ingest(path, stats, runs=["run-2"])
    assert [t.provenance.source_id for t in got] == ["run-2", "run-2"]
    own = [s for s in spans_of(runs[2], "genai") if not s.name.startswith("format ")]
    assert stats.read["spans"] == len(own) and stats.read["conversations"] == 1


@pytest.mark.parametrize(
    ("layout", "protocol", "version"),
    [("old", "old", ""), ("migrated", "old", ""), ("new", "as2", "2.0.8")],
)
def test_conversations_are_read_a_batch_per_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, protocol: str, version: str
) -> None:
    """`BATCH` conversations per query (the old layout through its temporary index), each
    conversation's spans in table order, exactly what one query per conversation reads;
    the no-session bucket (2.x) in its place among them, read a trace at a time."""
    from agentmill.ingest import studio

    day = datetime(2025, 11, 20, tzinfo=UTC)
    runs = [
        sample_run(f"run-{i:02d}", start=day + timedelta(minutes=i), with_run_row=i % 4 != 1)
        for i in range(9)
    ]
    if protocol == "as2":
        bucket = [Turn("Hi", [Step("Hello.")]), Turn("Bye", [Step("Bye.")])]
        runs.insert(4, RunScript("[no_session_id]", bucket, with_run_row=False))
    path = build_db(tmp_path / "db.sqlite", runs, layout, protocol, version)
    monkeypatch.setattr(studio, "BATCH", 4)

    def read(batch: int) -> tuple[list[list[tuple[str, str]]], list[str]]:
        monkeypatch.setattr(studio, "BATCH", batch)
        db, found = studio.open_checked(path)
        sql: list[str] = []
        fetch = studio.Fetcher(db, found)
        db.set_trace_callback(sql.append)
        units = list(studio.units(db, found, path, IngestOptions(), IngestStats()))
        groups = studio.conversation_spans(db, fetch, units, IngestStats(), IngestOptions())
        spans = [[(s.span_id, s.conversation_id or "") for s in g] for g in groups]
        db.close()
        return spans, [q for q in sql if "main.span_table WHERE" in q]

    one_each, single = read(1)
    batched, queries = read(4)
    assert batched == one_each and len(batched) == 9 + (2 if protocol == "as2" else 0)
    assert [len({c for _, c in g}) for g in batched if g[0][1]] == [1] * 9
    assert len(single) == 9 and len(queries) == 3  # 9 conversations, 4 per query
    assert all(" IN (" in q for q in queries)


def test_an_old_layout_file_with_a_no_run_bucket(tmp_path: Path) -> None:
    """The old layout has no conversation index, so its reader builds a temporary one; the
    no-run bucket ('unknown') is read through the same one (it used to build it twice and
    stop with 'table am_span_conv already exists')."""
    bucket = RunScript("unknown", [Turn("Hi", [Step("Hello.")])], with_run_row=False)
    path = build_db(tmp_path / "old.sqlite", [sample_run("run-1"), bucket], "old", "old")
    stats = IngestStats()
    found = ingest(path, stats)
    assert [t.final_answer for t in found][-1] == "Hello." and len(found) == 3
    assert stats.read["conversations"] == 2 and not stats.skipped
