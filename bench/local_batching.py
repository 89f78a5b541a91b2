"""Tokens/s of the embedded model through LocalBackend: batched vs one request at a time.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/local_batching.py [--requests 16] [--max-tokens 64]

The same prompts (temperature 0.8, max_tokens 64, seeded) are sent twice: all at once, so the
backend batches them into shared `generate` calls, then one after another. Tokens are the
completion tokens the backend reports; the figures are wall-clock, after one warm-up request.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from agentmill.backends.local import LocalBackend
from agentmill.config import LocalBackendConfig
from agentmill.records import Message, SamplingParams

TOPICS = [
    "the sea",
    "a mountain",
    "autumn",
    "a city at night",
    "coffee",
    "a robot",
    "rain",
    "the moon",
    "a library",
    "a train",
    "winter",
    "a garden",
    "the desert",
    "a cat",
    "music",
    "a bridge",
]


def prompts(n: int) -> list[list[Message]]:
    return [
        [Message(role="user", content=f"Write a short poem about {TOPICS[i % len(TOPICS)]}.")]
        for i in range(n)
    ]


async def batched(backend: LocalBackend, convs: list[list[Message]], params: SamplingParams) -> int:
    done = await asyncio.gather(*[backend.complete(m, None, params) for m in convs])
    return sum(c.usage.completion_tokens for c in done)


async def one_at_a_time(
    backend: LocalBackend, convs: list[list[Message]], params: SamplingParams
) -> int:
    total = 0
    for m in convs:
        total += (await backend.complete(m, None, params)).usage.completion_tokens
    return total


def timed(run: Coroutine[Any, Any, int]) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = asyncio.run(run)
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    cfg = LocalBackendConfig(max_batch_size=args.requests, batch_wait_ms=20, threads=args.threads)
    backend = LocalBackend("bench", cfg)
    backend.load()
    params = SamplingParams(temperature=0.8, max_tokens=args.max_tokens, seed=0)
    convs = prompts(args.requests)
    asyncio.run(one_at_a_time(backend, convs[:1], params))  # warm-up
    calls = backend.stats["generate_calls"]
    b_tok, b_s = timed(batched(backend, convs, params))
    calls = backend.stats["generate_calls"] - calls
    s_tok, s_s = timed(one_at_a_time(backend, convs, params))
    print(
        f"batched   ({args.requests} concurrent): {b_tok} tokens in {b_s:.1f} s = "
        f"{b_tok / b_s:.1f} tok/s  ({calls} generate call(s))"
    )
    print(f"one at a time:            {s_tok} tokens in {s_s:.1f} s = {s_tok / s_s:.1f} tok/s")
    print(f"speed-up: {(b_tok / b_s) / (s_tok / s_s):.2f}x")


if __name__ == "__main__":
    main()
