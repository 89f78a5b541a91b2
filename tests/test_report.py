"""The HTML report opened in a real headless chromium (tests/browser.py), and the Markdown form.

The run folder comes from the pipeline with the scripted fake backend (control flow: no model);
one of its replies is hostile markup, which must reach the page as text and never run.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from agentmill.report.analyze import analyze
from agentmill.store import iter_jsonl

# If this ran, the page would log a console error and try to load `x` (a resource).
HOSTILE = "</pre></td><img src=x onerror=\"console.error('xss')\"><script>console.error(1)</script>"


@pytest.fixture
def run_dir(scripted_run) -> Path:
    return scripted_run(wrong=HOSTILE)


def _chart_counts(browser, chart: str) -> list[int]:
    return browser.eval(
        f"[...document.querySelectorAll('svg[data-chart=\"{chart}\"] rect.bar')]"
        ".map(r => Number(r.dataset.count))"
    )


def test_run_writes_a_report_that_opens_offline(browser, run_dir: Path, tmp_path: Path) -> None:
    page = run_dir / "report.html"
    assert page.exists(), "agentmill run writes report.html at the end"
    text = page.read_text()
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), "external URL"
    browser.open(page)
    browser.settle()
    assert browser.errors == []
    # nothing was fetched: every chart, style and script is inline
    assert browser.eval("performance.getEntriesByType('resource').length") == 0
    assert browser.eval("document.querySelectorAll('img, script[src], link').length") == 0
    shot = browser.screenshot(tmp_path / "report.png", full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_chart_marks_match_the_data(browser, run_dir: Path) -> None:
    a = analyze(run_dir)
    browser.open(run_dir / "report.html")
    assert sum(_chart_counts(browser, "steps")) == a["records"]
    for kind in ("prompt", "completion", "total"):
        assert sum(_chart_counts(browser, f"tokens-{kind}")) == a["records"]
    assert sum(_chart_counts(browser, "reward-math")) == a["rewards"]["math"]["count"]
    assert _chart_counts(browser, "reward-math") == a["rewards"]["math"]["histogram"]["counts"]
    assert _chart_counts(browser, "funnel") == [r["records"] for r in a["funnel"]]
    assert sum(_chart_counts(browser, "tool-calls")) == a["tool_calls"] > 0
    assert sum(_chart_counts(browser, "drops-filter")) == sum(a["drops"]["filter"].values())
    # the run over time: every trajectory and model call of the run folder is in a bar
    trajs = sum(1 for _ in iter_jsonl(run_dir / "rollout" / "records.jsonl"))
    calls = sum(1 for _ in iter_jsonl(run_dir / "calls.jsonl"))
    assert sum(_chart_counts(browser, "per-minute-trajectories")) == trajs
    assert sum(_chart_counts(browser, "per-minute-calls")) == calls
    assert sum(_chart_counts(browser, "failures-by-reason")) == 2
    # bars are drawn: a non-zero count has a visible height or width
    sizes = browser.eval(
        "[...document.querySelectorAll('rect.bar')].filter(r => Number(r.dataset.count) > 0)"
        ".map(r => r.getBBox().width * r.getBBox().height)"
    )
    assert sizes and min(sizes) > 0


def test_expanding_a_trajectory_shows_its_tool_calls(
    browser, run_dir: Path, tmp_path: Path
) -> None:
    browser.open(run_dir / "report.html")
    assert browser.eval("document.querySelectorAll('tr.example details[open]').length") == 0
    visible = "document.querySelector('tr.example .tool-call').checkVisibility()"
    assert browser.eval(visible) is False
    browser.click("tr.example details summary")
    assert browser.eval("document.querySelector('tr.example details').open") is True
    assert browser.eval(visible) is True
    call = browser.eval("document.querySelector('tr.example .tool-call').innerText")
    assert "calculator" in call and "2+2" in call
    observation = browser.eval("document.querySelector('tr.example .role-tool').innerText")
    assert "observation" in observation and "4" in observation
    browser.screenshot(tmp_path / "expanded.png")
    assert browser.errors == []


def test_search_filters_the_examples(browser, run_dir: Path) -> None:
    browser.open(run_dir / "report.html")
    total = browser.eval("document.querySelectorAll('tr.example').length")
    assert total >= 2
    # the hostile reply is shown as text in the wrong answers only
    browser.type_text("#search", "onerror")
    shown = browser.eval("document.querySelectorAll('tr.example:not(.hidden)').length")
    assert 0 < shown < total
    assert browser.eval("document.getElementById('shown').textContent") == str(shown)
    assert all(
        "onerror" in t
        for t in browser.eval(
            "[...document.querySelectorAll('tr.example:not(.hidden)')].map(r => r.textContent)"
        )
    )
    assert browser.errors == []  # the markup never ran


def test_report_cli_markdown_and_no_rewards(cli, tmp_path: Path, run_dir: Path) -> None:
    md = tmp_path / "report.md"
    rc, _, _ = cli("report", run_dir, "-o", md, "--format", "md")
    assert rc == 0
    text = md.read_text()
    for heading in ("## Pipeline funnel", "## Rewards, steps and lengths", "## Tool usage"):
        assert heading in text
    assert "## The run over time" in text and "| exported sft.jsonl | " in text
    # record text sits in fences longer than any backtick run inside it
    records = tmp_path / "bare.jsonl"
    rec = orjson.loads(next(iter_jsonl(run_dir / "rollout" / "records.jsonl"))[1])
    rec.pop("rewards", None)
    rec["messages"][0]["content"] = "```\n# not a heading\n```"
    records.write_bytes(orjson.dumps(rec) + b"\n")
    rc, _, _ = cli("report", records, "-o", tmp_path / "bare.md", "--format", "md")
    bare = (tmp_path / "bare.md").read_text()
    assert rc == 0 and "a seeded sample" in bare
    assert "````\n```\n# not a heading\n```\n````" in bare
    rc, _, err = cli("report", run_dir, "-o", tmp_path / "r.pdf", "--format", "pdf")
    assert rc == 2 and "--format html" in err
