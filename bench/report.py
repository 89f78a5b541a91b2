"""Report size and open time: `agentmill report` on a run folder of 10,000 trajectories.

    .venv/bin/python bench/report.py                       # 10,000 trajectories
    .venv/bin/python bench/report.py --trajectories 100000 --repeats 3 --json out.json

Generates a run-folder layout (synthetic, seeded; written here, not by a run): `score/` and
`rollout/records.jsonl` with 1-6-step tool-using trajectories (calculator / search / python
calls, observations of 50-1,500 characters, a few malformed calls and tool errors, math and
format rewards, judge verdicts on a third), `calls.jsonl` (one line per model call spread over an
hour, with retries and cache hits), `failures.jsonl`, and a manifest funnel. Then measures, each
in a fresh child process:

- write: `write_report(run, report.html)` (one streaming pass), CPU seconds and peak RSS
  (`VmHWM` of the child);
- size of the page;
- open: load the page in headless chromium (tests/browser.py: the flags the tests use) until
  its `load` event, and until the first paint of the charts, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

# made-up syllable words: text of realistic lengths, nothing to tokenize specially
WORDS = [a + b for a in ("ka", "lo", "mi", "nu", "pe", "ro") for b in ("ta", "shi", "ven", "dor")]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi) // 6
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _trajectory(rng: random.Random, i: int, t0: float) -> dict:
    messages: list[dict] = [{"role": "user", "content": _text(rng, 60, 400) + "?"}]
    steps = rng.randint(1, 6)
    by_tool: dict[str, int] = {}
    for s in range(steps - 1):
        tool = rng.choice(["calculator", "search", "python"])
        by_tool[tool] = by_tool.get(tool, 0) + 1
        cid = f"call_{s}"
        fn = {"name": tool, "arguments": {"q": _text(rng, 10, 80)}}
        if rng.random() < 0.03:
            fn = {"name": tool, "raw_arguments": "{" + _text(rng, 10, 40)}
        messages.append(
            {
                "role": "assistant",
                "content": _text(rng, 0, 200),
                "tool_calls": [{"id": cid, "type": "function", "function": fn}],
            }
        )
        obs = "Error: the tool did not finish." if rng.random() < 0.05 else _text(rng, 50, 1500)
        messages.append({"role": "tool", "tool_call_id": cid, "name": tool, "content": obs})
    answer = str(rng.randint(0, 99))
    messages.append({"role": "assistant", "content": f"The answer is {answer}."})
    correct = rng.random() < 0.4
    rec = {
        "id": f"traj{i:07d}",
        "task_id": f"task{i // 4:06d}",
        "sample_index": i % 4,
        "messages": messages,
        "final_answer": answer,
        "rewards": {"math": 1.0 if correct else 0.0, "format": rng.choice([0.0, 1.0, 1.0])},
        "agent": {"steps": steps, "tool_calls": steps - 1, "by_tool": by_tool},
        "status": "ok",
        "stop_reason": rng.choice(["answer"] * 8 + ["length", "max_steps"]),
        "usage": {
            "prompt_tokens": rng.randint(200, 4000),
            "completion_tokens": rng.randint(10, 900),
        },
        "model": rng.choice(["teacher-a", "teacher-b"]),
        "provenance": {"source": rng.choice(["file", "synth", "traces"])},
        "created_at": t0 + i * 3600 / 10_000,
    }
    if i % 3 == 0:
        rec["verdicts"] = [
            {
                "judge": "rubric",
                "verdict": rng.choice(["GOOD", "BAD"]),
                "reason": _text(rng, 30, 200),
            }
        ]
    return rec


def generate(run: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    t0 = 1_790_000_000.0
    for stage in ("rollout", "score"):
        (run / stage).mkdir(parents=True, exist_ok=True)
    calls = 0
    with (run / "score" / "records.jsonl").open("w") as f:
        for i in range(n):
            rec = _trajectory(rng, i, t0)
            calls += rec["agent"]["steps"]
            f.write(json.dumps(rec) + "\n")
    (run / "rollout" / "records.jsonl").write_bytes((run / "score" / "records.jsonl").read_bytes())
    with (run / "calls.jsonl").open("w") as f:
        for c in range(calls):
            f.write(
                json.dumps(
                    {
                        "time": t0 + c * 3600 / calls,
                        "backend": "teacher",
                        "status": "ok",
                        "cache_hit": rng.random() < 0.1,
                        "retries": int(rng.random() < 0.02),
                    }
                )
                + "\n"
            )
    with (run / "failures.jsonl").open("w") as f:
        for k in range(n // 200):
            f.write(
                json.dumps(
                    {
                        "time": t0 + k * 30,
                        "stage": "rollout",
                        "key": f"k{k}",
                        "reason": rng.choice(["http_500", "timeout"]),
                    }
                )
                + "\n"
            )
    funnel = {
        "tasks": n // 4,
        "trajectories": n,
        "with_tool_call": n,
        "well_formed_call": n,
        "scored": n,
        "correct": int(0.4 * n),
        "kept": int(0.4 * n),
        "filtered": True,
        "dropped": {"reward_below_min:math": n - int(0.4 * n)},
    }
    (run / "manifest.json").write_text(json.dumps({"stages": {"funnel": funnel}}))


def _peak_rss_mb() -> float:
    """This process's peak RSS. Not `ru_maxrss`: Linux carries that over `exec` from the parent
    (here the generator, which holds far more), while `VmHWM` belongs to this process image."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_write(run: Path, out: Path, examples: int) -> None:
    from agentmill.report.html import write_report

    c0 = time.process_time()
    write_report(run, out, n_examples=examples)
    rss = _peak_rss_mb()
    print(json.dumps({"cpu_s": time.process_time() - c0, "rss_mb": rss}))


FRAME_JS = (
    "new Promise(r => requestAnimationFrame(() => "
    "requestAnimationFrame(() => r(performance.now()))))"
)


def _child_open(page: Path, repeats: int) -> None:
    import browser as b

    loads, paints = [], []
    with b.launch() as tab:  # the flags and profile handling of the tests
        for _ in range(repeats):
            loads.append(tab.open(page))
            # ms from navigation start to a frame drawn after the load (two animation frames)
            paints.append(tab.eval(FRAME_JS, await_promise=True))
        errors = list(tab.errors)
    print(
        json.dumps(
            {
                "load_s": min(loads),
                "frame_ms": min(paints),
                "console_errors": len(errors),
            }
        )
    )


def _in_child(fn: str, *args: str) -> dict:
    cmd = [sys.executable, __file__, "--child", fn, *args]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"bench child {fn} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=10, help="best and worst shown (each)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", nargs="+")
    args = ap.parse_args()
    if args.child:
        fn, *rest = args.child
        if fn == "write":
            _child_write(Path(rest[0]), Path(rest[1]), int(rest[2]))
        else:
            _child_open(Path(rest[0]), int(rest[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        t = time.perf_counter()
        generate(run, args.trajectories)
        data_mb = (run / "score" / "records.jsonl").stat().st_size / 1e6
        print(
            f"generated {args.trajectories} trajectories ({data_mb:.1f} MB) "
            f"in {time.perf_counter() - t:.1f}s"
        )
        page = run / "report.html"
        write = min(
            (
                _in_child("write", str(run), str(page), str(args.examples))
                for _ in range(args.repeats)
            ),
            key=lambda r: r["cpu_s"],
        )
        size_mb = page.stat().st_size / 1e6
        opened = _in_child("open", str(page), str(args.repeats))
        result = {
            "trajectories": args.trajectories,
            "examples": args.examples,
            "data_mb": round(data_mb, 1),
            "write_cpu_s": round(write["cpu_s"], 2),
            "write_rss_mb": round(write["rss_mb"], 1),
            "report_mb": round(size_mb, 3),
            "open_load_s": round(opened["load_s"], 3),
            "drawn_ms": round(opened["frame_ms"]),
            "console_errors": opened["console_errors"],
        }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
