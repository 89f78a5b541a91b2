"""`agentmill status RUN`, `agentmill show FILE`, `agentmill stats FILE`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from agentmill.curation.stage import funnel_lines
from agentmill.errors import UserError
from agentmill.summary import file_stats, load_records, run_status

ROLE_STYLE = {"system": "magenta", "user": "cyan", "assistant": "green", "tool": "yellow"}


def status_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Where a run stands: done / pending / failed by reason."""
    s = run_status(run_dir)
    if as_json:
        typer.echo(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode())
        return
    con = Console(emoji=False)
    state = "complete" if s["pending"] == 0 and not s["failed"] else "incomplete"
    con.print(f"[bold]{s['name']}[/] ({s['run_id']}) at {s['run_dir']}: [bold]{state}[/]")
    table = Table("stage", "done", "pending", "failed", "by reason")
    bad = sum(s["bad_records"].values())
    table.add_row("source", str(s["tasks"]), "0", str(bad), _reasons(s["bad_records"]))
    table.add_row(
        f"rollout (n={s['n']})",
        f"{s['done']}/{s['expected']}",
        str(s["pending"]),
        str(sum(s["failed"].values())),
        _reasons(s["failed"]),
    )
    con.print(table)
    funnel = s.get("funnel")
    if funnel:
        con.print(
            f"funnel: trajectories {funnel['trajectories']}, well-formed call "
            f"{funnel['well_formed_call']}, correct {funnel['correct']}, kept {funnel['kept']}, "
            f"exported {sum(funnel['exported'].values())}"
        )
        if funnel.get("judged"):
            con.print(f"judge: {_reasons(funnel['judged'])}")
    for line in funnel_lines(s.get("curation") or {}):
        con.print(line, markup=False, highlight=False)
    c = s["calls"]
    con.print(
        f"model calls {c['total']}  cache hits {c['cache_hits']}  retries {c['retries']}"
        f"  call errors {_reasons(c['errors']) or 0}  sessions {s['sessions']}"
    )


def _reasons(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1]))


def show_cmd(
    file: Path = typer.Argument(
        ..., help="A JSONL file of trajectories or tasks, or a run folder."
    ),
    index: int = typer.Option(
        0, "--index", "-i", help="Which record (0-based; negative from the end)."
    ),
) -> None:
    """Render one record readably: roles, tool calls, observations, rewards."""
    recs = load_records(file)
    if not recs:
        raise UserError(f"{file} has no records")
    if not -len(recs) <= index < len(recs):
        raise UserError(
            f"--index {index} is out of range: {file} has {len(recs)} records (0..{len(recs) - 1})"
        )
    # index % len: -1 is shown as the last record's number
    Console(emoji=False).print(render_record(recs[index], index % len(recs)))


def render_record(rec: dict[str, Any], index: int) -> Group:
    messages = rec.get("messages") or rec.get("prompt") or []
    head = Table.grid(padding=(0, 2))
    for key in (
        "id",
        "task_id",
        "sample_index",
        "model",
        "status",
        "stop_reason",
        "final_answer",
        "ground_truth",
        "rewards",
        "usage",
        "latency_s",
    ):
        if rec.get(key) not in (None, {}, ""):
            head.add_row(Text(key, style="bold"), Text(str(rec[key])))
    parts: list[Any] = [Panel(head, title=f"record {index}")]
    called = {  # call id -> tool name, to title each observation with the call it answers
        c.get("id"): (c.get("function") or {}).get("name")
        for m in messages
        for c in m.get("tool_calls") or []
    }
    for m in messages:
        parts.append(_message_panel(m, called))
    for v in rec.get("verdicts", []):
        parts.append(Text(f"judge {v.get('judge')}: {v.get('verdict')} - {v.get('reason', '')}"))
    return Group(*parts)


def _message_panel(m: dict[str, Any], called: dict[str, str | None]) -> Panel:
    body = Text()
    if m.get("reasoning"):
        body.append(f"(reasoning) {m['reasoning']}\n", style="dim")
    content = m.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content:
        body.append(str(content))
    for c in m.get("tool_calls") or []:
        fn = c.get("function", {})
        args = fn.get("arguments")
        shown = (
            orjson.dumps(args).decode()
            if args is not None
            else f"(unparsed) {fn.get('raw_arguments')}"
        )
        body.append(f"\n-> {fn.get('name')}({shown})  [{c.get('id')}]", style="bold")
    title = m["role"]
    if m.get("tool_call_id"):
        tool = m.get("name") or called.get(m["tool_call_id"]) or "?"
        title += f" {tool} [{m['tool_call_id']}]"
    return Panel(  # a Text title: ids like [c2] are not rich markup
        body, title=Text(title), title_align="left", border_style=ROLE_STYLE.get(m["role"], "white")
    )


def stats_cmd(
    file: Path = typer.Argument(
        ..., help="A JSONL file of trajectories or tasks, or a run folder."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Counts, stop reasons, token and latency distributions, rewards."""
    s = file_stats(file)
    if as_json:
        typer.echo(orjson.dumps(s, option=orjson.OPT_INDENT_2).decode())
        return
    table = Table("figure", "value", title=s["file"])
    for key, value in s.items():
        if key == "file":
            continue
        table.add_row(key, _fmt(value))
    Console(emoji=False).print(table)


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "  ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    return str(value)
