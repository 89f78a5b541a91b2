"""The report of a flywheel folder: one row per round of `ledger.jsonl`, and the held-out
successes per round as a chart (docs/train.md)."""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

import orjson

from agentmill.report import charts
from agentmill.store import iter_jsonl

HEADER = [
    "round",
    "sampler",
    "train records",
    "data sha256",
    "success",
    "95% CI",
    "called",
    "well-formed calls",
]


def read_ledger(root: Path) -> list[dict[str, Any]]:
    rows = {(r := orjson.loads(line))["round"]: r for _, line in iter_jsonl(root / "ledger.jsonl")}
    return [rows[k] for k in sorted(rows)]


def _pct(f: dict[str, Any]) -> str:
    return "-" if f.get("value") is None else f"{100 * f['value']:.1f}%"


def round_rows(ledger: list[dict[str, Any]]) -> list[list[str]]:
    out = []
    for r in ledger:
        ev, data = r["eval"], r.get("data") or {}
        lo, hi = ev["success"]["ci95"]
        out.append(
            [
                str(r["round"]),
                r.get("sampler", "(base student)"),
                str(data.get("records", "-")),
                (data.get("sha256") or "-")[:12],
                f"{_pct(ev['success'])} ({ev['success']['k']}/{ev['success']['n']})",
                f"{100 * lo:.0f}-{100 * hi:.0f}%",
                _pct(ev["called"]),
                _pct(ev["well_formed_calls"]),
            ]
        )
    return out


def render_rounds_html(root: Path, ledger: list[dict[str, Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in HEADER)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in round_rows(ledger)
    )
    n = ledger[0]["eval"]["success"]["n"] if ledger else 0
    chart = charts.columns(
        "rounds-success",
        [f"round {r['round']}" for r in ledger],
        [r["eval"]["success"]["k"] for r in ledger],
        f"held-out successes per round (of {n})",
    )
    title = f"agentmill flywheel: {root}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>body{{font:14px system-ui,sans-serif;margin:2em}}"
        "table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 6px}"
        "rect.bar{fill:#4c78a8}svg.chart text{font-size:11px}</style></head><body>"
        f"<h1>agentmill flywheel</h1><p>{escape(str(root))}</p><h2>Rounds</h2>"
        f'<table id="rounds"><tr>{head}</tr>{body}</table>{chart}</body></html>\n'
    )


def render_rounds_md(root: Path, ledger: list[dict[str, Any]]) -> str:
    lines = [f"# agentmill flywheel: {root}", "", "| " + " | ".join(HEADER) + " |"]
    lines.append("|" + " --- |" * len(HEADER))
    lines += ["| " + " | ".join(row) + " |" for row in round_rows(ledger)]
    return "\n".join(lines) + "\n"
