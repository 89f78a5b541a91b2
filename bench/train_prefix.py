"""Seconds per SFT step with and without prefix sharing (train/prefix.py), on the measured
flywheel's training rows.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/train_prefix.py [--steps 3] [--batch 8] [--lora]

The rows are the flywheel's SFT rows, built from its training tasks' expected calls
(examples/flywheel/calc_train.jsonl; the system prompt and the calculator + get_weather
tools of calc_sample.yaml): a call (a stand-in expression: the tasks name only the tool),
its result and the answer, or the answer alone. The
embedded SmolLM2-135M, full weights (as the flywheel trains) unless --lora, no activation
checkpointing, `agentmill train`'s own code path (`train.trainer.train`); one run per
setting from the same start, so the logged losses must agree too. s/step is TRL's
`train_runtime` over the steps (no model loading or saving).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import orjson

from agentmill.configfile import load_config
from agentmill.rollout.tools import build_tools
from agentmill.train.trainer import TrainOptions, train

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "flywheel" / "calc_sample.yaml"
TASKS = ROOT / "examples" / "flywheel" / "calc_train.jsonl"


def rows(count: int) -> list[dict]:
    cfg = load_config(CONFIG)
    tools = [t.schema() for t in build_tools(cfg.rollout.tools).values()]
    out = []
    for line in TASKS.read_text().splitlines()[:count]:
        task = json.loads(line)
        messages = [
            {"role": "system", "content": cfg.rollout.system_prompt},
            {"role": "user", "content": task["question"]},
        ]
        for i, call in enumerate(task["expected_calls"]):
            # the tasks name the tool only; a stand-in expression of about the real length
            args = {"expression": f"{task['answer']} * 1"}
            tc = {"id": f"c{i}", "type": "function", "function": {**call, "arguments": args}}
            messages.append({"role": "assistant", "content": "", "tool_calls": [tc]})
            messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": task["answer"]})
        messages.append({"role": "assistant", "content": str(task["answer"])})
        out.append({"messages": messages, "tools": tools})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lora", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "sft.jsonl"
        data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows(args.steps * args.batch)))
        print(f"{args.steps} steps of {args.batch} rows, {'LoRA' if args.lora else 'full'}")
        print("| prefix sharing | s/step | losses | prefix tokens not recomputed |")
        print("| --- | ---: | --- | ---: |")
        for sharing in (False, True):
            opts = TrainOptions(
                method="sft",
                lora=args.lora,
                max_steps=args.steps,
                batch_size=args.batch,
                learning_rate=1e-4,
                max_length=768,
                checkpointing=False,
                prefix_sharing=sharing,
            )
            s = train(data, "smollm2-135m", Path(tmp) / f"out-{sharing}", opts)
            log = Path(tmp) / f"out-{sharing}" / "train_log.jsonl"
            lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
            losses = [r["loss"] for r in lines if "loss" in r]
            runtime = next(r["train_runtime"] for r in lines if "train_runtime" in r)
            print(
                f"| {'on' if sharing else 'off'} | {runtime / s['steps']:.1f} | "
                f"{', '.join(f'{x:.4f}' for x in losses)} | {s['prefix_tokens_shared']} |"
            )


if __name__ == "__main__":
    main()
