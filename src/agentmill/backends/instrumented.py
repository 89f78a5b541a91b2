"""Wraps any backend with the response cache and the call log of the run folder."""

from __future__ import annotations

import time
from typing import Any

import orjson

from agentmill.backends.base import Backend, BackendError, Completion
from agentmill.cache import ResponseCache, cache_key
from agentmill.records import Message, SamplingParams
from agentmill.store import JsonlWriter


class Instrumented:
    """`complete()` with caching and one `calls.jsonl` line per call (cache hits included)."""

    def __init__(
        self,
        backend: Backend,
        backend_fp: str,
        seed: int,
        cache: ResponseCache | None = None,
        call_log: JsonlWriter | None = None,
    ):
        self.backend = backend
        self.name = backend.name
        self.model = backend.model
        self.max_concurrency = backend.max_concurrency
        self._fp = backend_fp
        self._seed = seed
        self._cache = cache
        self._log = call_log
        self.calls = 0  # calls that reached the model (not cache hits)

    async def complete(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        params: SamplingParams,
        sample_index: int = 0,
        work_key: str = "",
    ) -> Completion:
        key = None
        if self._cache is not None:
            key = cache_key(
                self._fp,
                [m.to_dict() for m in messages],
                tools,
                params.to_dict(),
                self._seed,
                sample_index,
            )
            hit = self._cache.get(key)
            if hit is not None:
                hit.cached = True
                self._record(time.time(), work_key, hit, "ok")
                return hit
        start = time.time()
        self.calls += 1
        try:
            completion = await self.backend.complete(messages, tools, params)
        except BackendError as e:
            self._record(
                start, work_key, None, e.reason, attempts=e.attempts, latency=time.time() - start
            )
            raise
        self._record(start, work_key, completion, "ok")
        if key is not None:
            self._cache.put(key, self.name, completion)
        return completion

    def _record(
        self,
        start: float,
        work_key: str,
        c: Completion | None,
        status: str,
        attempts: int = 1,
        latency: float = 0.0,
    ) -> None:
        if self._log is None:
            return
        line = {
            "time": start,
            "backend": self.name,
            "model": self.model,
            "key": work_key,
            "status": status,
            "cache_hit": bool(c and c.cached),
            "latency_s": round(c.latency_s if c else latency, 6),
            "attempts": c.attempts if c else attempts,
            "retries": (c.attempts if c else attempts) - 1,
            "prompt_tokens": c.usage.prompt_tokens if c else 0,
            "completion_tokens": c.usage.completion_tokens if c else 0,
        }
        self._log.append(orjson.dumps(line))

    @property
    def cache_hits(self) -> int:
        return self._cache.hits if self._cache else 0

    async def aclose(self) -> None:
        await self.backend.aclose()
