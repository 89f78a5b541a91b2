"""Keys and values kept across agent steps in the `local` backend, on and off.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/kv_reuse.py [--model M] [--forced] [--limit N]
        [--repeats 1] [--out DIR]

Runs `agentmill eval MODEL --tasks examples/flywheel/calc_held_out.jsonl` with the flywheel's
eval config (`calc_eval.yaml`: temperature 0, batches of 64) twice per repeat, the backend's
`kv_reuse_mb` at its default and at 0, alternating, each in a fresh process; prints the wall
time of each and whether every task got the same final answer both ways.

A model that answers without calling never reaches a second step, so there is nothing to
reuse: give a trained student (`--model runs/flywheel/round-2/model`), or `--forced` to force
the first step's call to the tool each task expects (`agent.first_tool_choice: expected`),
which makes the embedded model take a second step on every word problem.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "flywheel"


def config(folder: Path, kv_reuse_mb: int | None, forced: bool) -> Path:
    cfg = yaml.safe_load((EXAMPLES / "calc_eval.yaml").read_text())
    if kv_reuse_mb is not None:
        cfg["backends"]["teacher"]["kv_reuse_mb"] = kv_reuse_mb
    if forced:
        cfg["rollout"]["agent"]["first_tool_choice"] = "expected"
    for source in cfg["sources"]:
        source["path"] = str(EXAMPLES / source["path"])
    path = folder / f"eval-{'default' if kv_reuse_mb is None else kv_reuse_mb}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_eval(model: str, cfg: Path, out: Path, limit: int | None) -> tuple[float, dict, dict]:
    """Wall seconds, the eval figures and each task's final answer."""
    cmd = [sys.executable, "-m", "agentmill", "eval", model, "--config", str(cfg)]
    cmd += ["--tasks", str(EXAMPLES / "calc_held_out.jsonl"), "--out", str(out), "--new"]
    cmd += ["--json"] + (["--limit", str(limit)] if limit else [])
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"agentmill eval failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    (figures,) = orjson.loads(done.stdout)["models"].values()
    answers = {}
    with open(Path(figures["run"]) / "rollout" / "records.jsonl", "rb") as f:
        for line in f:
            record = orjson.loads(line)
            answers[record["task_id"]] = record["final_answer"]
    return wall, figures, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--forced", action="store_true", help="force the first step's call")
    ap.add_argument("--limit", type=int, default=None, help="only the first N tasks")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="where the eval runs go")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="agentmill-kv-reuse-"))
    out.mkdir(parents=True, exist_ok=True)
    modes = {"kept (default)": None, "off (kv_reuse_mb: 0)": 0}
    walls: dict[str, list[float]] = {m: [] for m in modes}
    seen: dict[str, tuple[dict, dict]] = {}
    for r in range(args.repeats):
        for mode, mb in modes.items():
            cfg = config(out, mb, args.forced)
            wall, figures, answers = run_eval(args.model, cfg, out / f"{r}-{mb}", args.limit)
            walls[mode].append(wall)
            seen[mode] = figures, answers
            print(f"repeat {r + 1}, {mode}: {wall:.1f} s", flush=True)
    (on, off) = modes
    a_on, a_off = seen[on][1], seen[off][1]
    same = sum(a_on[t] == a_off.get(t) for t in a_on)
    print(f"\nmodel {args.model}, {len(a_on)} tasks, forced first step: {args.forced}")
    print("| kv reuse | wall s (best) | correct | steps (mean) |")
    print("| --- | ---: | ---: | ---: |")
    for mode in modes:
        fig = seen[mode][0]
        s = fig["success"]
        print(f"| {mode} | {min(walls[mode]):.1f} | {s['k']}/{s['n']} | {fig['steps']['value']} |")
    print(f"same final answer on {same} of {len(a_on)} tasks")
    print(f"speed-up: {min(walls[off]) / min(walls[on]):.2f}x")


if __name__ == "__main__":
    main()
