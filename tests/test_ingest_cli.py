"""`agentmill ingest` end to end (all four formats), resume without loss, bad inputs, and the
redaction rules (positives and negatives)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import studio_db

from agentmill.errors import UserError
from agentmill.ingest.redact import Redactor
from agentmill.records import FunctionCall, Message, Provenance, Task, ToolCall, Trajectory

Cli = Callable[..., tuple[int, str, str]]
ROOT = Path(__file__).resolve().parents[1]
MINISWE = ROOT / "tests" / "fixtures" / "miniswe"
OTEL = ROOT / "tests" / "fixtures" / "otel" / "agentscope-1.0.21.otlp.jsonl"


def convo(i: int) -> str:
    msgs = [{"role": "user", "content": f"What is {i} + {i}?"},
            {"role": "assistant", "content": f"{2 * i}"}]  # fmt: skip
    return json.dumps({"id": f"c{i}", "messages": msgs})


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def records(path: Path) -> list[Trajectory]:
    return [Trajectory.from_json(line) for line in path.read_bytes().splitlines()]


# --- chat logs ---------------------------------------------------------------------------------


def test_chat_logs_end_to_end_then_a_grown_file(cli: Cli, tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [convo(0), "{oops", convo(1), convo(2)])
    out, tasks = tmp_path / "traj.jsonl", tmp_path / "tasks.jsonl"
    code, stdout, _ = cli("ingest", "chat-logs", log, "-o", out, "--tasks-out", tasks)
    assert code == 0
    assert "read: lines 4, messages 6" in stdout
    assert f"built 3 trajectories: 3 new -> {out}" in stdout
    assert f"skipped invalid JSON: 1 (first: {log}:2)" in stdout
    assert "tasks: 3 added, 0 already present" in stdout
    assert [t.provenance.source_id for t in records(out)] == ["c0", "c1", "c2"]
    assert [Task.from_json(x).ground_truth for x in tasks.read_bytes().splitlines()] == [
        "0",
        "2",
        "4",
    ]
    before_out, before_tasks = out.read_bytes(), tasks.read_bytes()

    with log.open("a") as f:
        f.write(convo(3) + "\n" + convo(4) + "\n")
    code, stdout, _ = cli("ingest", "chat-logs", log, "-o", out, "--tasks-out", tasks)
    assert code == 0
    assert "built 5 trajectories: 2 new" in stdout and "3 already there" in stdout
    assert "tasks: 2 added, 3 already present" in stdout
    assert out.read_bytes().startswith(before_out) and tasks.read_bytes().startswith(before_tasks)
    assert [t.provenance.source_id for t in records(out)] == ["c0", "c1", "c2", "c3", "c4"]


def test_strict_exits_2_and_keeps_what_was_written(cli: Cli, tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [convo(0), convo(1)])
    out = tmp_path / "traj.jsonl"
    assert cli("ingest", "chat-logs", log, "-o", out, "--strict")[0] == 0
    before = out.read_bytes()
    with log.open("a") as f:
        f.write(convo(2) + "\n" + '{"messages": "nope"}\n' + convo(3) + "\n")
    code, _, stderr = cli("ingest", "chat-logs", log, "-o", out, "--strict")
    assert code == 2
    assert (
        f"{log}:4: not a conversation (no messages list); fix the input or drop --strict" in stderr
    )
    assert out.read_bytes().startswith(before)
    assert [t.provenance.source_id for t in records(out)] == ["c0", "c1", "c2"]
    # without --strict the same file finishes: the bad line is a counted skip
    code, stdout, _ = cli("ingest", "chat-logs", log, "-o", out)
    assert code == 0 and "1 new" in stdout and "3 already there" in stdout


def test_a_killed_run_resumes_without_duplicates(cli: Cli, tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [convo(i) for i in range(4)])
    out = tmp_path / "traj.jsonl"
    cli("ingest", "chat-logs", log, "-o", out)
    whole = out.read_bytes()
    lines = whole.splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:30])  # killed while writing line 3
    code, stdout, _ = cli("ingest", "chat-logs", log, "-o", out)
    assert code == 0 and "2 new" in stdout and "2 already there" in stdout
    after = out.read_bytes().splitlines(keepends=True)
    assert after[:2] == lines[:2] and len(after) == 4
    assert [t.id for t in records(out)] == [Trajectory.from_json(x).id for x in lines]
    assert (tmp_path / "traj.jsonl.torn").exists()


# --- mini-swe, otel, studio ---------------------------------------------------------------------


def test_mini_swe_folder_end_to_end(cli: Cli, tmp_path: Path) -> None:
    out, tasks = tmp_path / "traj.jsonl", tmp_path / "tasks.jsonl"
    code, stdout, _ = cli("ingest", "mini-swe", MINISWE, "-o", out, "--tasks-out", tasks)
    assert code == 0
    assert "read: files 6, messages 57" in stdout and "built 6 trajectories: 6 new" in stdout
    # 5 submitted runs; two 2.x runs share the instance message and the diff (one qa_hash)
    assert "tasks: 4 added, 1 already present" in stdout
    assert "1 trajectories without a query or final answer" in stdout
    trajs = records(out)
    assert sorted(t.metadata["mini_version"] for t in trajs) == ["1.17.5"] * 2 + ["2.4.6"] * 4
    assert all(t.tools[0]["function"]["name"] == "bash" for t in trajs)


def test_otel_file_end_to_end(cli: Cli, tmp_path: Path) -> None:
    out, tasks = tmp_path / "traj.jsonl", tmp_path / "tasks.jsonl"
    code, stdout, _ = cli("ingest", "otel", OTEL, "-o", out, "--tasks-out", tasks)
    assert code == 0 and "built 2 trajectories: 2 new" in stdout
    assert {t.provenance.source for t in records(out)} == {"otel"}
    assert len(tasks.read_bytes().splitlines()) == 2
    code, _, stderr = cli("ingest", "otel", OTEL, "-o", out, "--project", "p")
    assert code == 2 and "--project applies to agentscope-studio only; drop it for otel" in stderr


def test_studio_database_end_to_end(cli: Cli, tmp_path: Path) -> None:
    db = studio_db.build_db(tmp_path / "database.sqlite", [studio_db.sample_run("run-1")])
    out, tasks = tmp_path / "traj.jsonl", tmp_path / "tasks.jsonl"
    args = ("ingest", "agentscope-studio", db, "-o", out, "--tasks-out", tasks)
    code, stdout, _ = cli(*args, "--run", "run-1", "--since", "2000-01-01")
    assert code == 0 and "built 2 trajectories: 2 new" in stdout
    assert [t.final_answer for t in records(out)][1] == "Doubled it is 782."
    assert cli(*args, "--run", "other-run")[1].count("built 0 trajectories") == 1


# --- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat-logs", "{missing}"], "file not found"),
        (["slack", "{log}"], "unknown trace format 'slack'; use one of: agentscope-studio"),
        (["chat-logs", "{log}", "--project", "p"], "--project applies to agentscope-studio only"),
        (["mini-swe", "{log}", "--logs", "{log}"], "--logs applies to otel only; drop it for"),
        (["otel", "{log}", "--since", "May 3rd"], "--since 'May 3rd' is not an ISO date"),
        (["chat-logs", "{log}", "--redact-pattern", "("], "redaction pattern '(' is not a valid"),
        (["chat-logs", "{log}", "--tasks-out", "{out}"], "-o and --tasks-out are both"),
        (["chat-logs", "{log}", "--tasks-out", "{log}"], "is the input file; write to another"),
        (["mini-swe", "{empty}"], "no *.traj.json files under"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    cli: Cli, tmp_path: Path, args: list[str], message: str
) -> None:
    log = write(tmp_path / "log.jsonl", [convo(0)])
    (tmp_path / "empty").mkdir()
    places = {"log": log, "out": tmp_path / "o.jsonl", "missing": tmp_path / "nope.jsonl",
              "empty": tmp_path / "empty"}  # fmt: skip
    argv = [a.format(**places) for a in args]
    code, _, stderr = cli("ingest", *argv[:2], "-o", places["out"], *argv[2:])
    assert code == 2
    assert message in stderr and len(stderr.strip().splitlines()) == 1


def test_val_fraction_out_of_range_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [convo(0)])
    code, _, stderr = cli("ingest", "chat-logs", log, "-o", tmp_path / "o", "--val-fraction", "2")
    assert code == 2 and "--val-fraction" in stderr


# --- redaction ----------------------------------------------------------------------------------

POSITIVES = {
    "write to bob.smith+ops@example.co.uk today": "write to [REDACTED_EMAIL] today",
    "call +1 415 555 2671.": "call [REDACTED_PHONE].",
    "+44 (0)20 7946 0958": "[REDACTED_PHONE]",
    "+33612345678": "[REDACTED_PHONE]",
    "(415) 555-2671 or 415.555.2671": "[REDACTED_PHONE] or [REDACTED_PHONE]",
    "office 020 7946 0958": "office [REDACTED_PHONE]",
    "mobile 06 12 34 56 78": "mobile [REDACTED_PHONE]",
    "key sk-proj-AbCdEf0123456789xyzXYZ ok": "key [REDACTED_KEY] ok",
    "AKIAIOSFODNN7EXAMPLE": "[REDACTED_KEY]",
    "ghp_abcdefghijklmnopqrstuvwxyz0123456789": "[REDACTED_KEY]",
    "Authorization: Bearer abc.def123ghi456jkl": "Authorization: Bearer [REDACTED_TOKEN]",
    "api_key=9f86d081884c7d659a2feaa0c55ad015": "api_key=[REDACTED_KEY]",
    '{"secret": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}': '{"secret": "[REDACTED_KEY]"}',
    "password: hunter2hunter2X9": "password: [REDACTED_KEY]",
}
NEGATIVES = [
    "order 12345 and 1234567 and 9876543210",
    "on 2024-01-15, 15.01.2024, 2024/01/15 at 10:30:00",
    "at 2026-01-01T00:00:00.000Z",
    "version 1.2.3 on 192.168.1.1, pi 3.141592653589793",
    "max_tokens: 512 and the token count is 4096",
    "task-abcdefghijklmnopqrstuv and commit 3e6df8b4a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6",
    "uuid 123e4567-e89b-12d3-a456-426614174000, ISBN 978-3-16-148410-0",
    "user@localhost, +5 points, Bearer of bad news, password: see the vault",
    "1733000000123456789 ns",
]


@pytest.mark.parametrize(("text", "expected"), POSITIVES.items())
def test_builtin_rules_mask(text: str, expected: str) -> None:
    assert Redactor().text(text) == expected


@pytest.mark.parametrize("text", NEGATIVES)
def test_builtin_rules_leave_plain_numbers_dates_and_ids(text: str) -> None:
    assert Redactor().text(text) == text


def test_user_patterns_and_builtin_switch() -> None:
    text = "ORDER-123456 for bob@example.com"
    assert Redactor([r"ORDER-\d{6}"]).text(text) == "[REDACTED] for [REDACTED_EMAIL]"
    assert Redactor([r"ORDER-\d{6}"], builtin=False).text(text) == "[REDACTED] for bob@example.com"
    assert Redactor(extra_patterns=[r"ORDER-\d{6}"]).text(text) == "[REDACTED] for [REDACTED_EMAIL]"
    with pytest.raises(UserError, match="not a valid regular expression"):
        Redactor(["(unclosed"])


def test_trajectory_redaction_reaches_every_string_but_ids() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="mail", arguments={"to": ["a@b.com"]}))
    raw_call = ToolCall(id="c2", function=FunctionCall(name="mail", raw_arguments="{to: a@b.com"))
    t = Trajectory(
        id="bob@example.com-id",
        task_id="x",
        messages=[
            Message(role="user", content=[{"type": "text", "text": "I am a@b.com"}]),
            Message(
                role="assistant", content=None, tool_calls=[call, raw_call], reasoning="a@b.com"
            ),
            Message(role="tool", tool_call_id="c1", content="sent to a@b.com"),
        ],
        final_answer="Sent to a@b.com",
        metadata={"user": {"email": "a@b.com", "n": 3}},
        provenance=Provenance(source="chat-logs", source_id="a@b.com"),
    )
    r = Redactor().trajectory(t)
    dump = r.to_json().decode()
    assert dump.count("a@b.com") == 1 and r.provenance.source_id == "a@b.com"
    assert r.id == t.id and r.metadata == {"user": {"email": "[REDACTED_EMAIL]", "n": 3}}
    assert r.messages[0].content == [{"type": "text", "text": "I am [REDACTED_EMAIL]"}]
    assert r.messages[1].tool_calls[0].function.arguments == {"to": ["[REDACTED_EMAIL]"]}
    assert r.messages[1].tool_calls[1].function.raw_arguments == "{to: [REDACTED_EMAIL]"
    assert r.messages[1].reasoning == "[REDACTED_EMAIL]"
    assert r.final_answer == "Sent to [REDACTED_EMAIL]"
    # the ingest's path: the canonical dict redacted, unchanged itself, canonical still
    data = t.to_dict()
    assert Redactor().record(data) == r.to_dict() and data == t.to_dict()


def test_redact_flag_end_to_end(cli: Cli, tmp_path: Path) -> None:
    secret = "sk-proj-AbCdEf0123456789xyzXYZ"
    record: dict[str, Any] = {
        "id": "c1",
        "metadata": {"customer": "jane@example.org"},
        "messages": [
            {"role": "user", "content": "I am jane@example.org, call +49 30 1234567 re ORDER-123456"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "k", "function": {
                "name": "lookup", "arguments": json.dumps({"key": secret})}}]},
            {"role": "tool", "tool_call_id": "k", "content": "found"},
            {"role": "assistant", "content": "Mailed jane@example.org about ORDER-123456."},
        ],
    }  # fmt: skip
    log = write(tmp_path / "log.jsonl", [json.dumps(record)])
    out, tasks = tmp_path / "traj.jsonl", tmp_path / "tasks.jsonl"
    code, _, _ = cli("ingest", "chat-logs", log, "-o", out, "--tasks-out", tasks, "--redact",
                     "--redact-pattern", r"ORDER-\d{6}")  # fmt: skip
    assert code == 0
    for text in (out.read_text(), tasks.read_text()):
        assert "jane@example.org" not in text and secret not in text and "1234567" not in text
        assert "ORDER-123456" not in text
    [t] = records(out)
    assert t.messages[0].content == "I am [REDACTED_EMAIL], call [REDACTED_PHONE] re [REDACTED]"
    assert t.messages[1].tool_calls[0].function.arguments == {"key": "[REDACTED_KEY]"}
    assert t.final_answer == "Mailed [REDACTED_EMAIL] about [REDACTED]."
    # a pattern alone masks only the pattern
    out2 = tmp_path / "traj2.jsonl"
    cli("ingest", "chat-logs", log, "-o", out2, "--redact-pattern", r"ORDER-\d{6}")
    assert "jane@example.org" in out2.read_text() and "ORDER-123456" not in out2.read_text()
