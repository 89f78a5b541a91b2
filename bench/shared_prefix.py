"""Seconds per batch with the shared prefix expanded to every row vs kept once, and with finished
rows leaving the batch (local engine).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/shared_prefix.py [--batch 16] [--batches 2]

The prompts are the measured flywheel's sampling prompts (examples/flywheel/calc_sample.yaml:
its system prompt, worked exchanges and the calculator + get_weather tools, ~1,500 tokens of
which all but the question are shared) on the first training questions; temperature 0.5,
`max_tokens` 48, one `generate` per batch straight on the engine. *expanded*: the encoded
prefix is copied to every row of a `DynamicCache` (which copies the whole cache again at
every step as it grows); *shared*: the prefix is kept once and each row's own tokens go to a
preallocated buffer (`backends/shared_prefix.py`), in HF `generate` (every row runs until the
longest ends); *shared, early exit*: the same, in `shared_prefix.decode`, where a finished row
leaves the batch. All start each batch from the warm prefix LRU (the prefix is encoded before
timing). Greedy rows are identical on all paths (tested); sampled rows differ between
`generate` and `decode`, which draw differently.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from agentmill.backends.local_engine import Engine
from agentmill.config import LocalBackendConfig
from agentmill.configfile import load_config
from agentmill.models import resolve_model
from agentmill.records import Message

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "flywheel" / "calc_sample.yaml"
TASKS = ROOT / "examples" / "flywheel" / "calc_train.jsonl"


def prompts(engine: Engine, count: int) -> list[str]:
    from agentmill.rollout.tools import build_tools

    cfg = load_config(CONFIG)
    tools = [t.schema() for t in build_tools(cfg.rollout.tools).values()]
    head = [Message(role="system", content=cfg.rollout.system_prompt), *cfg.rollout.few_shot]
    questions = [json.loads(line)["question"] for line in TASKS.open()][:count]
    return [engine.render([*head, Message(role="user", content=q)], tools) for q in questions]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=2)
    args = ap.parse_args()
    engine = Engine(resolve_model("smollm2-135m"), LocalBackendConfig(model="smollm2-135m"))
    assert engine.shared_attention, "the embedded model should take the shared-prefix path"
    rows = prompts(engine, args.batch * args.batches)
    n_tokens = len(engine.tok(rows[0], add_special_tokens=False)["input_ids"])
    key = (0.5, 1.0, 48, ())
    engine.generate(rows[:2], key, [0])  # encode the shared prefix into the LRU
    print(f"{len(rows)} prompts of ~{n_tokens} tokens, {args.batch} rows per batch")
    print("| path | s/batch | completion tokens/s |\n| --- | ---: | ---: |")
    paths = (
        ("expanded", False, False),
        ("shared", True, False),
        ("shared, early exit", True, True),
    )
    for name, shared, early in paths:
        engine.shared_attention, engine.early_exit = shared, early
        seconds, tokens = 0.0, 0
        for i in range(0, len(rows), args.batch):
            start = time.perf_counter()
            out = engine.generate(rows[i : i + args.batch], key, [i])
            seconds += time.perf_counter() - start
            tokens += sum(r.completion_tokens for r in out)
        per_batch = seconds / args.batches
        print(f"| {name} | {per_batch:.1f} | {tokens / seconds:.0f} |")


if __name__ == "__main__":
    main()
