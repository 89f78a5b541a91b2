"""A FAKE OpenAI-compatible server for transport and control-flow tests. Never a model.

It answers `POST /v1/chat/completions` with `"echo: " + <last user message>` after
`latency_ms`, and injects faults on request: a last user message containing
`FAULT=<kind>x<count>` gets the fault on its first `count` attempts (attempts are counted
per distinct last user message) and a normal answer after that. Kinds: an HTTP status
(`429` with `Retry-After`, `500`, `400`, ...), `hang` (sleep `hang_s`, then answer),
`reset` (drop the connection without a response) and `badjson` (200 with a truncated body).

Every request is logged in `StubServer.log` (and, with `log_path`, as one JSON line per
request) as `{t, key, attempt, outcome}`, so a test can check arrival times and counts.
`GET /stats` returns `{"requests": n, "by_key": {...}}`; `GET /v1/models` lists one model.

Run it on its own (the benchmark does, pinned to one core):

    .venv/bin/python -m agentmill.testing.stub_server --port 8000 --latency-ms 200 --cpu 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import orjson
from aiohttp import web

FAULT = re.compile(r"FAULT=(\d{3}|hang|reset|badjson)x(\d+)")
JSON = "application/json"
Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class StubServer:
    """The fake server; `start()` it in a running loop, or use `run_stub_in_thread`."""

    def __init__(
        self,
        latency_ms: float = 0.0,
        retry_after_s: float = 1.0,
        hang_s: float = 30.0,
        log_path: Path | str | None = None,
        require_key: str | None = None,
    ):
        self.latency_s = latency_ms / 1000
        self.retry_after_s = retry_after_s
        self.hang_s = hang_s
        self.require_key = require_key
        self.log: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.bodies: dict[str, dict[str, Any]] = {}  # the last request body per key
        self.replies: dict[str, dict[str, Any]] = {}
        self._log_file: IO[bytes] | None = open(log_path, "ab") if log_path else None  # noqa: SIM115
        self._runner: web.ServerRunner | None = None
        self._routes: dict[tuple[str, str], Handler] = {}
        self._stopping: asyncio.Event | None = None

    def add_reply(self, key: str, message: dict[str, Any], **fields: Any) -> None:
        """Answer requests whose last user message is `key` with this assistant `message`;
        `fields` override top-level response fields (a None value removes the field)."""
        self.replies[key] = {"message": message, **fields}

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0 picks a free port); returns the base URL ending in /v1."""
        # The low-level server (no Application, no router): a fake should cost little CPU.
        self._routes = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("GET", "/v1/models"): self._models,
            ("GET", "/stats"): self._stats,
        }
        self._stopping = asyncio.Event()
        server = web.Server(self._dispatch, access_log=None)
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=4096)
        await site.start()
        bound = self._runner.addresses[0]
        return f"http://{host}:{bound[1]}/v1"

    async def stop(self) -> None:
        """Stop serving; requests still hanging are answered at once."""
        if self._stopping is not None:
            self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # ------------------------------------------------------------ handlers
    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        handler = self._routes.get((request.method, request.path))
        if handler is None:
            return _error(404, f"no route {request.method} {request.path}")
        return await handler(request)

    async def _chat(self, request: web.BaseRequest) -> web.StreamResponse:
        t = time.time()
        expected = f"Bearer {self.require_key}"
        if self.require_key and request.headers.get("Authorization") != expected:
            self._record(t, "", 0, "401")
            return _error(401, "missing or wrong API key")
        try:
            body = orjson.loads(await request.read())
            key = _last_user_text(body["messages"])
        except (ValueError, KeyError, TypeError):
            self._record(t, "", 0, "400")
            return _error(400, "body is not a chat completion request")
        n = self.attempts[key] = self.attempts.get(key, 0) + 1
        self.bodies[key] = body
        fault = _fault(key, n)
        self._record(t, key, n, fault or "ok")
        if fault is not None:
            return await self._inject(request, fault, body, key)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return web.Response(body=orjson.dumps(self._reply(body, key)), content_type=JSON)

    async def _inject(
        self, request: web.BaseRequest, fault: str, body: dict[str, Any], key: str
    ) -> web.StreamResponse:
        if fault == "hang":
            await self._wait_stopping(self.hang_s)
            return web.Response(body=orjson.dumps(self._reply(body, key)), content_type=JSON)
        if fault == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()  # never sent: the connection is gone
        if fault == "badjson":
            return web.Response(
                body=b'{"id": "chatcmpl-stub", "choices": [{"mess', content_type=JSON
            )
        status = int(fault)
        headers = {"Retry-After": f"{self.retry_after_s:g}"} if status in (429, 503) else None
        return _error(status, f"injected fault {fault}", headers)

    async def _wait_stopping(self, seconds: float) -> None:
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _models(self, request: web.BaseRequest) -> web.Response:
        data = {"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "stub"}]}
        return web.Response(body=orjson.dumps(data), content_type=JSON)

    async def _stats(self, request: web.BaseRequest) -> web.Response:
        data = {"requests": len(self.log), "by_key": self.attempts}
        return web.Response(body=orjson.dumps(data), content_type=JSON)

    # ------------------------------------------------------------ helpers
    def _reply(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        text = "echo: " + key
        prompt_words = sum(len(_text(m.get("content")).split()) for m in body["messages"])
        out: dict[str, Any] = {
            "id": f"chatcmpl-{len(self.log)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "stub"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_words + len(text.split()),
            },
        }
        canned = self.replies.get(key)
        return out if canned is None else _apply_canned(out, canned)

    def _record(self, t: float, key: str, attempt: int, outcome: str) -> None:
        entry = {"t": t, "key": key, "attempt": attempt, "outcome": outcome}
        self.log.append(entry)
        if self._log_file is not None:
            self._log_file.write(orjson.dumps(entry) + b"\n")
            self._log_file.flush()


def _apply_canned(out: dict[str, Any], canned: dict[str, Any]) -> dict[str, Any]:
    fields = dict(canned)
    out["choices"][0]["message"] = {"role": "assistant", **fields.pop("message")}
    if "finish_reason" in fields:
        out["choices"][0]["finish_reason"] = fields.pop("finish_reason")
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def _fault(key: str, attempt: int) -> str | None:
    m = FAULT.search(key)
    if m is None or attempt > int(m.group(2)):
        return None
    return m.group(1)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            return _text(m.get("content"))
    return ""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    data = {"error": {"message": message, "type": "stub_error", "code": status}}
    return web.Response(status=status, body=orjson.dumps(data), content_type=JSON, headers=headers)


@contextmanager
def run_stub_in_thread(**kw: Any) -> Iterator[tuple[StubServer, str]]:
    """Run a `StubServer(**kw)` in a background thread's event loop; yields (server, base_url)."""
    server = StubServer(**kw)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="stub-server", daemon=True)
    thread.start()
    try:
        url = asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server, url
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def kill_when_a_call_hangs(cmd: list[str], server: StubServer, timeout_s: float = 60.0) -> None:
    """Start `cmd` and SIGKILL it the moment `server` holds one of its requests hanging (a
    `hang` fault or `hang_s` reply): the kill lands while a model call is in flight."""
    import subprocess

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout_s
    while time.time() < deadline and not any(e["outcome"] == "hang" for e in server.log):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


# ---------------------------------------------------------------- command line
def _raise_fd_limit() -> None:
    """A thousand concurrent clients need more descriptors than the usual soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve(args: argparse.Namespace) -> None:
    server = StubServer(
        latency_ms=args.latency_ms, retry_after_s=args.retry_after_s, log_path=args.log
    )
    url = await server.start(args.host, args.port)
    print(url, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m agentmill.testing.stub_server --port P --latency-ms MS [--cpu N] [--log F]`"""
    p = argparse.ArgumentParser(description="Fake OpenAI-compatible server (tests, benchmarks).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--retry-after-s", type=float, default=1.0)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU core")
    p.add_argument("--log", type=Path, default=None, help="append one JSON line per request")
    args = p.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    _raise_fd_limit()
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
