"""Candidates per minute and keep rate by reason of `agentmill synth` with a given generator.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/synth.py [--kind tools|docs|both] [--n 20]
        [--max-tokens 192] [--structured auto|never] [--device cpu] [--solver-k 2]

The embedded model (SmolLM2-135M, `local` backend) is generator and solver, no judge, no
cache (every candidate is a fresh model call). Tools: the bundled tool set, all five kinds in
rotation. Docs: the example corpus (examples/data/synth_corpus.jsonl), chains of 2-3 documents.
Prints one JSON line per kind (the stats file `agentmill synth` writes, plus the pass-rate
distribution of the kept docs tasks).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from agentmill.config import LocalBackendConfig
from agentmill.records import SamplingParams
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.engine import synthesize

CORPUS = Path(__file__).resolve().parents[1] / "examples" / "data" / "synth_corpus.jsonl"


def run(kind: str, args: argparse.Namespace) -> dict:
    src = SynthSourceConfig(
        kind=kind,
        n=args.n,
        corpus=CORPUS if kind == "docs" else None,
        params=SamplingParams(temperature=0.8, max_tokens=args.max_tokens),
        structured=args.structured,
        solver_k=args.solver_k,
        solver_params=SamplingParams(temperature=0.7, max_tokens=64),
        max_concurrency=args.concurrency,
    )
    backend = LocalBackendConfig(device=args.device, max_batch_size=args.concurrency)
    src.bind({"generator": backend}, seed=args.seed, cache=False)
    outcomes, stats = synthesize(src)
    rates = [o.task.metadata.get("difficulty") for o in outcomes if o.kept]
    stats["difficulty"] = dict(Counter(r for r in rates if r is not None))
    return {"kind": kind, "device": args.device, **stats}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--kind", choices=["tools", "docs", "both"], default="both")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--structured", choices=["auto", "never"], default="auto")
    p.add_argument("--solver-k", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for kind in ["tools", "docs"] if args.kind == "both" else [args.kind]:
        print(json.dumps(run(kind, args)), flush=True)


if __name__ == "__main__":
    main()
