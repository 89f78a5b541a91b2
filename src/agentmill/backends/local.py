"""An in-process transformers model that batches concurrent requests into shared `generate` calls.

    backend = LocalBackend("student", LocalBackendConfig(model="smollm2-135m"))
    messages = [Message(role="user", content="Hi")]
    completion = await backend.complete(messages, None, SamplingParams(max_tokens=32))

`complete()` renders the chat template and queues the prompt; one worker task per event loop
collects up to `max_batch_size` requests (waiting up to `batch_wait_ms` after the first),
groups those with identical generation settings, and runs one left-padded `generate` per
group in a single worker thread. The model is loaded once (lazily, or with `load()`) and is
shared by every event loop that uses the backend, so one instance survives successive
`asyncio.run` calls.

What it does NOT do: continuous batching (a batch runs until its longest row ends), native
tool calling (the text tool protocol lives in the rollout), or constrained decoding, so
`tool_choice` other than "auto"/"none" is refused. A seed makes a request reproducible when
it runs with the same batch companions (alone, in particular): rows of one batch share the
random stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmill.backends.base import BackendError, Completion
from agentmill.config import LocalBackendConfig
from agentmill.errors import UserError
from agentmill.models import require_local_extra, resolve_model
from agentmill.records import Message, SamplingParams, Usage, content_hash

# (temperature, top_p, max_tokens, stop): requests that share these share a generate call.
GroupKey = tuple[float, float, int, tuple[str, ...]]


@dataclass
class _Request:
    prompt: str
    params: SamplingParams
    future: asyncio.Future[Completion]

    @property
    def key(self) -> GroupKey:
        p = self.params
        return (p.temperature, p.top_p, p.max_tokens, tuple(p.stop))


@dataclass
class RowOutput:
    """One row of a batched generate, decoded."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def template_message(m: Message) -> dict[str, Any]:
    """A message as chat templates expect it: text content, tool-call arguments as dicts."""
    out: dict[str, Any] = {"role": m.role, "content": m.text}
    if m.name is not None:
        out["name"] = m.name
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {
                "name": c.function.name,
                "arguments": c.function.arguments
                if c.function.arguments is not None else c.function.raw_arguments,
            }}
            for c in m.tool_calls
        ]
    return out


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str | None:
    """`text` up to the earliest stop string, or None when no stop string occurs."""
    hits = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(hits)] if hits else None


def check_tool_choice(tools: list[dict[str, Any]] | None, params: SamplingParams) -> None:
    """Refuse a forced tool choice: it needs constrained decoding, which we do not fake."""
    if tools and params.tool_choice not in ("auto", "none"):
        raise BackendError(
            "unsupported",
            f"local backend: tool_choice={params.tool_choice!r} needs constrained decoding, "
            "which arrives with the text tool protocol; use tool_choice='auto' for now",
            transient=False,
        )


def combined_seed(seeds: list[int]) -> int:
    """One seed for a batch: the request's own seed when all agree, else a hash of them all."""
    if len(set(seeds)) == 1:
        return seeds[0]
    return int(content_hash(sorted(seeds)), 16) % (2**63)


class Engine:
    """A loaded tokenizer and model; every method here is synchronous and thread-bound."""

    # transformers' own annotations do not type-check cleanly through the Auto classes.
    tok: Any
    lm: Any

    def __init__(self, path: Path, cfg: LocalBackendConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
        try:
            self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
            self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype))
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot load local model from {path}: {first}; "
                            "check that the folder holds a causal LM with its tokenizer") from None
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.lm.to(cfg.device).eval()
        self.eos_ids = self._eos_ids()
        self.top_k = getattr(self.lm.generation_config, "top_k", None) or 0
        self._warm_up()

    def _warm_up(self) -> None:
        """One tiny generate: the weights may be memory-mapped, so the first forward pass
        reads them all from disk; better here than inside the first timed request."""
        prompt = self.render([Message(role="user", content="Hi")], None)
        self.generate([prompt], (0.0, 1.0, 1, ()), [])

    def _eos_ids(self) -> set[int]:
        eos = self.lm.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tok.eos_token_id is not None:
            ids.add(self.tok.eos_token_id)
        return ids

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        """The prompt text: the chat template applied, ending with the assistant header."""
        text: str = self.tok.apply_chat_template(
            [template_message(m) for m in messages], tools=tools or None,
            add_generation_prompt=True, tokenize=False,
        )
        return text

    def generate(self, prompts: list[str], key: GroupKey, seeds: list[int]) -> list[RowOutput]:
        """One left-padded `generate` over `prompts`, all sharing the settings in `key`."""
        import torch

        enc = self.tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(self.lm.device)
        with torch.inference_mode(), self._seeded(seeds):
            out = self.lm.generate(**enc, **self._generate_kwargs(key))
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        return [self._row(ids, n, key[3]) for ids, n in zip(new, prompt_lens, strict=True)]

    def _generate_kwargs(self, key: GroupKey) -> dict[str, Any]:
        temperature, top_p, max_tokens, stop = key
        kw: dict[str, Any] = {
            "max_new_tokens": max_tokens, "pad_token_id": self.tok.pad_token_id,
            "use_cache": True, "do_sample": temperature > 0,
        }
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p, top_k=self.top_k)
        else:
            kw.update(temperature=None, top_p=None, top_k=None)
        if stop:
            kw.update(stop_strings=list(stop), tokenizer=self.tok)
        return kw

    @contextlib.contextmanager
    def _seeded(self, seeds: list[int]) -> Iterator[None]:
        """Seed the global RNG for one generate, restoring its state afterwards."""
        if not seeds:
            yield
            return
        import torch

        device = self.lm.device
        devices = [] if device.type == "cpu" else [device.index or 0]
        with torch.random.fork_rng(devices=devices, device_type=device.type):
            torch.manual_seed(combined_seed(seeds))
            yield

    def _row(self, ids: list[int], prompt_tokens: int, stop: tuple[str, ...]) -> RowOutput:
        """Decode one row. The pad may equal EOS (SmolLM2), so a row that a stop string ended
        looks like one that ended with EOS a token later: the stop string in the text tells."""
        ends = self.eos_ids | {self.tok.pad_token_id}
        end = next((i for i, t in enumerate(ids) if t in ends), len(ids))
        text: str = self.tok.decode(ids[:end], skip_special_tokens=True)
        cut = cut_at_stop(text, stop)
        if cut is not None:
            return RowOutput(cut, "stop", int(prompt_tokens), end)
        if end < len(ids):
            return RowOutput(text, "stop", int(prompt_tokens), end + (ids[end] in self.eos_ids))
        return RowOutput(text, "length", int(prompt_tokens), end)


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

    def __init__(self, name: str, cfg: LocalBackendConfig):
        self.name = name
        self.cfg = cfg
        self.model = cfg.model
        # Four batches' worth in flight keeps the next batch full while one generates.
        self.max_concurrency = 4 * cfg.max_batch_size
        self.stats: dict[str, int] = dict.fromkeys(
            ("requests", "generate_calls", "batched_requests", "max_batch"), 0)
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
                self._engine = Engine(resolve_model(self.model), self.cfg)

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
        check_tool_choice(tools, params)
        loop = asyncio.get_running_loop()
        if self._engine is None:
            await loop.run_in_executor(self._pool(), self.load)
        request = _Request(self._render(messages, tools), params, loop.create_future())
        self._state_for(loop).queue.put_nowait(request)
        self.stats["requests"] += 1
        completion = await request.future
        completion.latency_s = time.perf_counter() - start
        return completion

    def _render(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
        try:
            return self.engine.render(messages, tools)
        except Exception as e:  # jinja errors: bad role order, a template's own raise_exception
            raise BackendError("template_error", f"local model {self.model}: chat template "
                               f"failed: {type(e).__name__}: {e}", transient=False) from e

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
            groups: dict[GroupKey, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.key, []).append(request)
            try:
                for key, group in groups.items():
                    await self._run_group(key, group)
            except Exception as e:  # a bug here must not strand the callers or kill the worker
                for r in batch:
                    _fail(r, BackendError("local_error", f"local backend {self.name}: "
                                          f"{type(e).__name__}: {e}", transient=False))

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

    async def _run_group(self, key: GroupKey, group: list[_Request]) -> None:
        live = [r for r in group if not r.future.done()]  # callers may have given up
        if not live:
            return
        seeds = [r.params.seed for r in live if r.params.seed is not None]
        self._count(len(live))
        loop = asyncio.get_running_loop()
        try:
            rows = await loop.run_in_executor(
                self._pool(), self.engine.generate, [r.prompt for r in live], key, seeds)
        except Exception as e:
            for r in live:
                _fail(r, BackendError("local_error", f"local model {self.model}: generate "
                                      f"failed: {type(e).__name__}: {e}", transient=False))
            return
        for r, row in zip(live, rows, strict=True):
            if not r.future.done():
                r.future.set_result(self._completion(row))

    def _count(self, n: int) -> None:
        self.stats["generate_calls"] += 1
        self.stats["batched_requests"] += n
        self.stats["max_batch"] = max(self.stats["max_batch"], n)

    def _completion(self, row: RowOutput) -> Completion:
        return Completion(
            text=row.text, finish_reason=row.finish_reason, model=self.model,
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
