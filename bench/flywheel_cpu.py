"""The measured CPU flywheel (docs/benchmarks.md, "Flywheel on CPU").

    HF_HUB_OFFLINE=1 .venv/bin/python bench/flywheel_cpu.py [--rounds 2] [--out DIR] [--json F]

Runs `agentmill flywheel examples/flywheel/calc.yaml --rounds N` (or resumes it in `--out`),
then prints, per round, the held-out figures with 95% Wilson intervals: correct (the math
reward), correct per kind of task, well-formed calls over all calls, the calculator chosen
(tool selection) on word problems, and no-tool questions answered without a call; plus the
training data kept, the training steps and the wall time of each step of the flywheel.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from agentmill.evaluation import proportion  # noqa: E402
from agentmill.store import iter_jsonl  # noqa: E402

KINDS = ("one-call", "two-call", "no-tool")


def _lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for _, line in iter_jsonl(path)] if path.exists() else []


def _run_seconds(run: Path) -> float:
    """Model time of a run folder: its first model call's start to its last call's end (the
    call log survives copies and resumes, unlike file times)."""
    calls = _lines(run / "calls.jsonl")
    if not calls:
        return 0.0
    end = max(c["time"] + c["latency_s"] for c in calls)
    return round(end - min(c["time"] for c in calls), 1)


def per_kind(run: Path) -> dict[str, dict]:
    tasks = {t["id"]: t for t in _lines(run / "source" / "records.jsonl")}
    hits = {k: [0, 0] for k in KINDS}
    for t in _lines(run / "score" / "records.jsonl"):
        kind = tasks[t["task_id"]]["metadata"]["kind"]
        hits[kind][0] += t["rewards"].get("math", 0.0) >= 1.0
        hits[kind][1] += 1
    return {k: proportion(*v) for k, v in hits.items()}


def _pct(p: dict) -> str:
    if p["value"] is None:
        return "–"
    lo, hi = p["ci95"]
    return f"{100 * p['value']:.1f}% [{100 * lo:.0f}–{100 * hi:.0f}] ({p['k']}/{p['n']})"


def table(out: Path) -> tuple[str, list[dict]]:
    ledger = _lines(out / "ledger.jsonl")
    rows = []
    head = (
        "| round | sampler | kept for training | train steps (s) | correct | one-call | two-call "
        "| no-tool | well-formed calls | calculator chosen | no-tool: no call | sample s | eval s |"
    )
    lines = [head, "|" + " --- |" * 13]
    for r in ledger:
        k = r["round"]
        run_dir = Path(r["eval"]["run"])
        kinds = per_kind(run_dir)
        sample = out / f"round-{k}" / "run"
        train = r.get("train") or {}
        row = {
            "round": k,
            "sampler": r.get("sampler", "–"),
            "kept": (r.get("data") or {}).get("records"),
            "train_steps": train.get("steps"),
            "train_s": train.get("seconds"),
            "eval": r["eval"],
            "kinds": kinds,
            "sample_s": _run_seconds(sample) if sample.exists() else None,
            "eval_s": _run_seconds(run_dir),
        }
        rows.append(row)
        ev = r["eval"]
        steps = f"{row['train_steps']} ({row['train_s']:.0f})" if train else "–"
        lines.append(
            f"| {k} | {row['sampler']} | {row['kept'] if row['kept'] is not None else '–'} "
            f"| {steps} | **{_pct(ev['success'])}** | {_pct(kinds['one-call'])} "
            f"| {_pct(kinds['two-call'])} | {_pct(kinds['no-tool'])} "
            f"| {_pct(ev['well_formed_calls'])} | {_pct(ev['tool_selection'])} "
            f"| {_pct(ev['no_call'])} | {row['sample_s'] or '–'} | {row['eval_s']} |"
        )
    return "\n".join(lines), rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/calc-flywheel"))
    ap.add_argument("--config", type=Path, default=ROOT / "examples" / "flywheel" / "calc.yaml")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "agentmill", "flywheel", str(args.config)]
    cmd += ["--rounds", str(args.rounds), "--out", str(args.out)]
    start = time.monotonic()
    done = subprocess.run(cmd)
    wall = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(done.returncode)
    text, rows = table(args.out)
    print(text)
    print(f"\nwall time of this command: {wall / 60:.1f} min (a resumed flywheel counts only now)")
    if args.json:
        args.json.write_bytes(orjson.dumps({"wall_s": wall, "rounds": rows}))


if __name__ == "__main__":
    main()
