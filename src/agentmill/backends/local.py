"""An in-process transformers model that batches concurrent requests into shared `generate` calls.

    backend = LocalBackend("student", LocalBackendConfig(model="smollm2-135m"))
    messages = [Message(role="user", content="Hi")]
    completion = await backend.complete(messages, None, SamplingParams(max_tokens=32))

`complete()` renders the chat template and queues the prompt; one worker task per event loop
collects up to `max_batch_size` requests (waiting up to `batch_wait_ms` after the first),
groups those with identical generation settings, and runs one padded `generate` per group in a
single worker thread (one per family of shared prefix when the group's prompts fork early);
the shared prompt prefix is encoded once, reused across batches (`local_engine.PrefixCache`;
`prefix_cache=False` turns that off) and kept once per batch (`shared_prefix`). The model is loaded
once (lazily, or with `load()`) and is shared by every event loop that uses the backend, so
one instance survives successive `asyncio.run` calls.

Tools travel through the text tool protocol (`rollout/protocol.py`): with tools the prompt is
rendered with `tool_chat.jinja`, and the reply comes back as raw text holding `<tool_call>`
blocks, which the agent loop parses (`parse_tool_calls`); the backend parses nothing.
`tool_choice`: "auto" offers the tools; "none" renders the prompt without them; "required" or
a function name forces one call by constrained decoding (`backends/constrained.py`; stop
strings do not apply to it). Forced requests with the same settings share a `generate`, each
row masked by its own grammar; a name that is not offered is a "bad_request" error. Without
tools, `tool_choice` is ignored.

On the shared-prefix path a row leaves its batch as soon as it ends (EOS, a stop string,
`max_tokens`; `shared_prefix.decode`), so one rambling row no longer keeps fifteen finished ones
computing, and forced rows are masked by their own grammar matchers; the plain path runs HF
`generate`, where a batch runs until its longest row ends. A finished row's states are kept
(`kv_reuse_mb`, `backends/row_cache.py`), so the agent's next step encodes only its new
tokens. What it does NOT do: continuous batching (new requests wait for the running batch
instead of joining it), or native tool calling. A seed makes a
request reproducible when it runs with the same batch companions (alone, in particular): rows
of one batch share the random stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agentmill.backends.base import BackendError, Completion
from agentmill.backends.constrained import FORCED_PREFIX, forced_functions, wrap_call
from agentmill.backends.local_engine import Engine, GroupKey, RowOutput
from agentmill.config import LocalBackendConfig
from agentmill.models import require_local_extra, resolve_model
from agentmill.records import Message, SamplingParams, Usage

# The engine's settings, and whether the rows are constrained by call grammars.
BatchKey = tuple[GroupKey, bool]


@dataclass
class _Request:
    prompt: str
    params: SamplingParams
    future: asyncio.Future[Completion]
    grammar: Any = None  # the compiled call grammar of a forced tool call

    @property
    def key(self) -> BatchKey:
        p = self.params
        stop = () if self.grammar is not None else tuple(p.stop)
        return (p.temperature, p.top_p, p.max_tokens, stop), self.grammar is not None


@dataclass
class _LoopState:
    """The queue and worker of one event loop."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Request] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    # The requests taken off the queue and not yet answered: `aclose` fails them.
    held: list[_Request] = field(default_factory=list)


class LocalBackend:
    """The Backend protocol over an in-process transformers model, with request batching.

    `stats` counts `requests`, `generate_calls`, `batched_requests` (requests served by those
    calls) and `max_batch` (the largest call so far).
    """

    def __init__(self, name: str, cfg: LocalBackendConfig, prefix_cache: bool = True):
        self.name = name
        self.cfg = cfg
        # Reuse the encoded shared prefix of a batch's prompts (`local_engine.PrefixCache`).
        self.prefix_cache = prefix_cache
        self.model = cfg.model
        # Four batches' worth in flight keeps the next batch full while one generates.
        self.max_concurrency = 4 * cfg.max_batch_size
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "generate_calls", "batched_requests", "max_batch"), 0
        )
        self._engine: Engine | None = None
        self._load_lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._state: _LoopState | None = None

    # ------------------------------------------------------------ loading
    def load(self) -> None:
        """Load the model now (idempotent, thread-safe); `complete()` calls it when needed."""
        with self._load_lock:
            if self._engine is None:
                require_local_extra()
                self._engine = Engine(resolve_model(self.model), self.cfg, self.prefix_cache)

    @property
    def engine(self) -> Engine:
        """The loaded engine; call `load()` first."""
        if self._engine is None:
            raise RuntimeError("LocalBackend.load() has not run")
        return self._engine

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            prefix = f"agentmill-local-{self.name}"
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=prefix)
        return self._executor

    # ------------------------------------------------------------ requests
    async def complete(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        params: SamplingParams,
    ) -> Completion:
        """Queue one request for the next batch and wait for its completion."""
        start = time.perf_counter()
        forced = forced_functions(tools, params.tool_choice)
        if params.tool_choice == "none":
            tools = None
        loop = asyncio.get_running_loop()
        if self._engine is None:
            await loop.run_in_executor(self._pool(), self.load)
        prompt = self._render(messages, tools)
        grammar = None
        if forced is not None:
            grammar = await asyncio.to_thread(self._grammar, forced)
            prompt += FORCED_PREFIX
        request = _Request(prompt, params, loop.create_future(), grammar)
        self._state_for(loop).queue.put_nowait(request)
        self.stats["requests"] += 1
        completion = await request.future
        completion.latency_s = time.perf_counter() - start
        return completion

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        try:
            return self.engine.render(messages, tools)
        except Exception as e:  # jinja errors: bad role order, a template's own raise_exception
            raise BackendError(
                "template_error",
                f"local model {self.model}: chat template failed: {type(e).__name__}: {e}",
                transient=False,
            ) from e

    def _grammar(self, functions: list[dict[str, Any]]) -> Any:
        try:
            return self.engine.grammars.get(functions)
        except Exception as e:  # xgrammar rejects some schemas (e.g. unsupported keywords)
            raise BackendError(
                "bad_request",
                f"local model {self.model}: cannot compile the tool call grammar: {e}",
                transient=False,
            ) from e

    def _state_for(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        """This loop's queue and worker, made on first use and remade when the loop changes."""
        state = self._state
        if state is None or state.loop is not loop:
            state = self._state = _LoopState(loop)
        if state.worker is None or state.worker.done():
            state.worker = loop.create_task(self._work(state), name=f"agentmill-local-{self.name}")
        return state

    async def _work(self, state: _LoopState) -> None:
        while True:
            batch: list[_Request] = []
            state.held = batch
            await self._collect(state.queue, batch)
            groups: dict[BatchKey, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            try:
                for key, group in groups.items():
                    await self._run_group(key, group)
            except Exception as e:  # a bug here must not strand the callers or kill the worker
                for r in batch:
                    _fail(
                        r,
                        BackendError(
                            "local_error",
                            f"local backend {self.name}: {type(e).__name__}: {e}",
                            transient=False,
                        ),
                    )

    async def _collect(self, queue: asyncio.Queue[_Request], batch: list[_Request]) -> None:
        """Into `batch`: the first request, then whatever else arrives within `batch_wait_ms`,
        up to `max_batch_size` (appended as they come, so a cancelled worker loses none)."""
        batch.append(await queue.get())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.batch_wait_ms / 1000
        while len(batch) < self.cfg.max_batch_size:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                break

    async def _run_group(self, key: BatchKey, group: list[_Request]) -> None:
        live = [r for r in group if not r.future.done()]  # callers may have given up
        if not live:
            return
        seeds = [r.params.seed for r in live if r.params.seed is not None]
        grammars = [r.grammar for r in live] if key[1] else None
        self._count(len(live))
        loop = asyncio.get_running_loop()
        prompts = [r.prompt for r in live]
        try:
            rows = await loop.run_in_executor(
                self._pool(), self.engine.generate, prompts, key[0], seeds, grammars
            )
        except Exception as e:
            for r in live:
                _fail(
                    r,
                    BackendError(
                        "local_error",
                        f"local model {self.model}: generate failed: {type(e).__name__}: {e}",
                        transient=False,
                    ),
                )
            return
        for r, row in zip(live, rows, strict=True):
            if not r.future.done():
                r.future.set_result(self._completion(row, forced=key[1]))

    def _count(self, n: int) -> None:
        self.stats["generate_calls"] += 1
        self.stats["batched_requests"] += n
        self.stats["max_batch"] = max(self.stats["max_batch"], n)

    def _completion(self, row: RowOutput, *, forced: bool) -> Completion:
        text = wrap_call(row.text, complete=row.finish_reason == "stop") if forced else row.text
        return Completion(
            text=text,
            finish_reason=row.finish_reason,
            model=self.model,
            usage=Usage(prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens),
        )

    async def aclose(self) -> None:
        """Stop this loop's worker and fail what it still held; the loaded model is kept."""
        state, self._state = self._state, None
        if state is not None:
            await _stop_worker(state)
            leftovers = list(state.held)
            while not state.queue.empty():
                leftovers.append(state.queue.get_nowait())
            for r in leftovers:
                _fail(r, BackendError("closed", f"local backend {self.name} was closed"))
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


def _fail(request: _Request, error: BackendError) -> None:
    if not request.future.done() and not request.future.get_loop().is_closed():
        request.future.set_exception(error)


async def _stop_worker(state: _LoopState) -> None:
    """Cancel the worker if it belongs to the running loop (a finished loop's worker is gone)."""
    worker = state.worker
    if worker is None or worker.done() or state.loop is not asyncio.get_running_loop():
        return
    worker.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await worker
