"""`agentmill report`: one self-contained HTML file (or Markdown) from the analysis of a records
file or a run folder.

The page opens offline: charts are inline SVG (`charts.py`), the style and the search script are
inline, and nothing refers to another file or host. Every piece of record text is escaped, since
traces carry whatever a model or a user wrote.

    agentmill report runs/quickstart -o report.html
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.report import charts
from agentmill.report.examples import score
from agentmill.report.timeline import timeline
from agentmill.store import write_atomic

STAT_KEYS = ("count", "mean", "min", "p50", "p90", "max")
MAX_TEXT = 20_000  # characters of one message shown; keeps a report of long traces small

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:1180px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:0}p.source{color:#555;margin-top:.2em;word-break:break-all}
h2{border-bottom:1px solid #ccc;margin-top:1.8em}
.grid{display:flex;flex-wrap:wrap;gap:1.2em 2em}figure.chart{margin:0}
figcaption{font-weight:600;margin-bottom:2px}svg.chart text{font-size:11px;fill:#333}
rect.bar{fill:#4c78a8}rect.bar:hover{fill:#f58518}
.cards{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;border-radius:6px;
padding:.5em 1em;min-width:8em}.card .v{font-size:1.6em;font-weight:600}.card .k{color:#555}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;
vertical-align:top;text-align:left}td.num{text-align:right}
.msg{border-left:3px solid #ccc;margin:4px 0;padding:2px 8px}
.role-user{border-color:#4c78a8}.role-assistant{border-color:#54a24b}
.role-tool{border-color:#f58518}.role-system{border-color:#999}
.tool-call{background:#f4f4f4;margin:2px 0;padding:2px 6px}
pre{white-space:pre-wrap;word-break:break-word;margin:2px 0;max-width:900px}
#search{width:30em;padding:4px}tr.hidden{display:none}.note{color:#555}
"""

# Filters the examples table as the user types; the only script in the page.
SCRIPT = """
document.getElementById('search').addEventListener('input', function (e) {
  var q = e.target.value.toLowerCase(), shown = 0;
  document.querySelectorAll('tr.example').forEach(function (row) {
    var hit = row.textContent.toLowerCase().indexOf(q) !== -1;
    row.classList.toggle('hidden', !hit);
    if (hit) { shown += 1; }
  });
  document.getElementById('shown').textContent = shown;
});
"""


def write_report(
    path: Path,
    out: Path,
    fmt: str = "html",
    n_examples: int = 10,
    seed: int = 0,
    stage: str | None = None,
) -> Path:
    """Analyse `path` (a records file or a run folder) and write the report to `out`.

    Written to a temporary file and renamed, so a report is never half-written.
    """
    from agentmill.report.analyze import scan
    from agentmill.report.markdown import render_markdown

    if fmt not in ("html", "md"):
        raise UserError(f"unknown report format {fmt!r}; use --format html or --format md")
    if (path / "ledger.jsonl").exists():  # a flywheel folder: its rounds
        from agentmill.report.rounds import read_ledger, render_rounds_html, render_rounds_md

        ledger = read_ledger(path)
        page = (render_rounds_html if fmt == "html" else render_rounds_md)(path, ledger)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, page.encode("utf-8"))
        return out
    analysis, examples = scan(path, stage, n_examples, seed)
    tl = timeline(path) if path.is_dir() else None
    render = render_html if fmt == "html" else render_markdown
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, render(analysis, examples, tl).encode("utf-8"))
    return out


def render_html(
    analysis: dict[str, Any],
    examples: dict[str, list[dict[str, Any]]],
    tl: dict[str, Any] | None = None,
) -> str:
    """The whole page as one string."""
    source = str(analysis.get("source", ""))
    title = f"agentmill report: {source}"
    body = [
        f'<h1>agentmill report</h1><p class="source">{escape(source)}</p>',
        _overview(analysis),
        _funnel(analysis),
        _distributions(analysis),
        _tools(analysis),
        _breakdowns(analysis),
        _timeline(tl) if tl else "",
        _examples(examples),
    ]
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        + "".join(body)
        + f"<script>{SCRIPT}</script></body></html>\n"
    )


def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.3g}" if isinstance(x, float) else str(x)


def _pct(rate: float | None) -> str:
    return "not scored" if rate is None else f"{100 * rate:.1f}%"


def _table(header: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{_fmt(v)}</td>'
            if isinstance(v, int | float)
            else f"<td>{escape(_fmt(v))}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'


def _overview(a: dict[str, Any]) -> str:
    cards = [
        ("records", a.get("records", 0)),
        ("tasks", a.get("tasks", 0)),
        ("success rate", _pct(a.get("success_rate"))),
        ("tool calls", a.get("tool_calls", 0)),
        ("malformed calls", f"{100 * a.get('malformed_call_rate', 0.0):.1f}%"),
    ]
    body = "".join(
        f'<div class="card" data-figure="{escape(k)}"><div class="v">{escape(str(v))}</div>'
        f'<div class="k">{escape(k)}</div></div>'
        for k, v in cards
    )
    return f'<h2>Overview</h2><div class="cards">{body}</div>'


def _funnel(a: dict[str, Any]) -> str:
    figs = []
    if a.get("funnel"):
        rows = {r["stage"]: r["records"] for r in a["funnel"]}
        figs.append(charts.bars("funnel", rows, "records through the pipeline", ordered=True))
    figs.append(charts.bars("status", a.get("status", {}), "status"))
    figs.append(charts.bars("stop_reasons", a.get("stop_reasons", {}), "stop reasons"))
    if any(a.get("verdicts", {}).values()):
        figs.append(charts.bars("verdicts", a["verdicts"], "judge verdicts"))
    for stage, reasons in a.get("drops", {}).items():
        figs.append(charts.bars(f"drops-{stage}", reasons, f"dropped at {stage}"))
    return '<h2>Pipeline funnel</h2><div class="grid">' + "".join(figs) + "</div>"


def _hist(name: str, dist: dict[str, Any], title: str) -> str:
    h = dist.get("histogram") or {"edges": [], "counts": []}
    stats = ", ".join(f"{k} {_fmt(dist[k])}" for k in STAT_KEYS if k in dist)
    return charts.histogram(name, h["edges"], h["counts"], f"{title} ({stats})")


def _distributions(a: dict[str, Any]) -> str:
    figs = [
        _hist(f"reward-{name}", d, f"reward {name}") for name, d in a.get("rewards", {}).items()
    ]
    figs.append(_hist("steps", a.get("steps", {}), "steps"))
    for kind, d in a.get("tokens", {}).items():
        figs.append(_hist(f"tokens-{kind}", d, f"{kind} tokens"))
    return '<h2>Rewards, steps and lengths</h2><div class="grid">' + "".join(figs) + "</div>"


def _tools(a: dict[str, Any]) -> str:
    tools = a.get("tools", {})
    calls = {name: t.get("calls", 0) for name, t in tools.items()}
    errors = {name: t.get("errors", 0) for name, t in tools.items()}
    rows = [
        [n, t.get("calls", 0), t.get("errors", 0), t.get("error_rate", 0.0)]
        for n, t in tools.items()
    ]
    return (
        '<h2>Tool usage</h2><div class="grid">'
        + charts.bars("tool-calls", calls, "calls per tool")
        + charts.bars("tool-errors", errors, "errors per tool")
        + "</div>"
        + _table(["tool", "calls", "errors", "error rate"], rows, "tools")
    )


def _breakdowns(a: dict[str, Any]) -> str:
    out = []
    for key, label in (("by_source", "source"), ("by_model", "model")):
        rows = [
            [k, v.get("records", 0), _pct(v.get("success_rate"))] for k, v in a.get(key, {}).items()
        ]
        if rows:
            out.append(_table([label, "records", "success rate"], rows, key))
    return "<h2>By source and model</h2>" + "".join(out) if out else ""


def _timeline(tl: dict[str, Any]) -> str:
    rows = tl.get("per_minute", [])
    labels = [r["minute"] for r in rows]
    figs, quiet = [], []
    for f in ("trajectories", "calls", "retries", "cache_hits", "failures"):
        counts = [r[f] for r in rows]
        if any(counts):
            label = f.replace("_", " ")
            figs.append(charts.columns(f"per-minute-{f}", labels, counts, f"{label} per minute"))
        else:
            quiet.append(f.replace("_", " "))
    if tl.get("failures_by_reason"):
        figs.append(charts.bars("failures-by-reason", tl["failures_by_reason"], "failures"))
    totals = [
        ["model calls", tl.get("calls", 0)],
        ["retries", tl.get("retries", 0)],
        ["cache hits", tl.get("cache_hits", 0)],
        ["wall time (s)", tl.get("wall_s", 0.0)],
    ]
    note = f'<p class="note">none in this run: {escape(", ".join(quiet))}</p>' if quiet else ""
    return (
        "<h2>The run over time</h2>"
        + _table(["", "value"], totals, "timeline")
        + '<div class="grid">'
        + "".join(figs)
        + "</div>"
        + note
    )


def _examples(examples: dict[str, list[dict[str, Any]]]) -> str:
    n = sum(len(v) for v in examples.values())
    head = "<tr><th>group</th><th>score</th><th>id</th><th>model</th><th>trajectory</th></tr>"
    rows = "".join(_example_row(group, r) for group, recs in examples.items() for r in recs)
    note = "" if "sample" not in examples else "<p>No record carries a reward: a seeded sample.</p>"
    return (
        "<h2>Examples</h2>" + note + '<p><input id="search" type="search" '
        f'placeholder="search the trajectories"> showing <span id="shown">{n}</span> of {n}</p>'
        f'<table id="examples">{head}{rows}</table>'
    )


def _example_row(group: str, r: dict[str, Any]) -> str:
    model = escape(str(r.get("model") or ""))
    summary = escape(str(r.get("id", "?")))
    return (
        f'<tr class="example" data-group="{escape(group)}"><td>{escape(group)}</td>'
        f'<td class="num">{_fmt(score(r))}</td><td>{summary}</td><td>{model}</td>'
        f"<td><details><summary>{len(r.get('messages') or [])} messages</summary>"
        f"{_trajectory(r)}</details></td></tr>"
    )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        value = "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in value)
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + f"\n[... {len(value) - MAX_TEXT} more characters]"
    return f"<pre>{escape(value)}</pre>"


def _message(m: dict[str, Any]) -> str:
    role = str(m.get("role", "?"))
    kind = "observation" if role == "tool" else role
    parts = [f"<b>{escape(kind)}</b>"]
    if m.get("reasoning"):
        parts.append(f"<i>reasoning</i>{_text(m['reasoning'])}")
    parts.append(_text(m.get("content")))
    for call in m.get("tool_calls") or []:
        fn = call.get("function", {})
        args = fn.get("arguments")
        shown = fn.get("raw_arguments") if args is None else orjson.dumps(args).decode()
        parts.append(
            f'<div class="tool-call"><b>call {escape(str(fn.get("name", "?")))}</b>'
            f"{_text(shown)}</div>"
        )
    return f'<div class="msg role-{escape(role)}">{"".join(parts)}</div>'


def _trajectory(r: dict[str, Any]) -> str:
    parts = [_message(m) for m in r.get("messages") or []]
    rewards = [[k, v] for k, v in (r.get("rewards") or {}).items()]
    if rewards:
        parts.append(_table(["reward", "value"], rewards, "rewards"))
    verdicts = [
        [v.get("judge"), v.get("verdict"), v.get("reason")] for v in r.get("verdicts") or []
    ]
    if verdicts:
        parts.append(_table(["judge", "verdict", "reason"], verdicts, "verdicts"))
    meta = [["status", r.get("status", "ok")], ["stop reason", r.get("stop_reason", "")]]
    parts.append(_table(["", ""], meta, "meta"))
    return "".join(parts)
