"""`OpenAIBackend`: any OpenAI-compatible `/v1/chat/completions` endpoint over aiohttp.

One `aiohttp.ClientSession` per backend, created lazily in the running event loop, with a
connection pool and a semaphore both sized to `max_concurrency`. Transient failures (429,
408, 409, 5xx, timeouts, dropped connections, garbled bodies) are retried with exponential
backoff and full jitter, honouring `Retry-After`; anything else fails at once with a
`BackendError` whose `reason` is a stable label (`http_500`, `timeout`, `connection`, ...).

The API key is read from the environment at request time and never enters a message, a log
line or a repr: error texts are built here from the status, the reason and the body only.

>>> from agentmill.config import OpenAIBackendConfig
>>> cfg = OpenAIBackendConfig(base_url="http://localhost:8000/v1", model="m")
>>> OpenAIBackend("teacher", cfg)
OpenAIBackend(name='teacher', model='m', base_url='http://localhost:8000/v1')
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from aiolimiter import AsyncLimiter
from yarl import URL

from agentmill.backends.base import BackendError, Completion
from agentmill.config import OpenAIBackendConfig
from agentmill.errors import UserError
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall, Usage

RETRY_STATUSES = frozenset({408, 409, 429})
RETRY_AFTER_STATUSES = frozenset({429, 503})
NAMED_TOOL_CHOICES = frozenset({"auto", "required", "none"})
CHECK_TIMEOUT_S = 5.0


class _Secret(str):
    """A string whose repr hides it, so tracebacks that show locals never print the key."""

    def __repr__(self) -> str:
        return "'***'"


class _Failure(Exception):
    """One failed attempt: what went wrong, whether a retry may help, and how long to wait."""

    def __init__(
        self,
        reason: str,
        transient: bool,
        detail: str,
        retry_after: float | None = None,
        unreachable: bool = False,
        body: bytes = b"",
    ):
        super().__init__(detail)
        self.reason = reason
        self.transient = transient
        self.detail = detail
        self.retry_after = retry_after
        self.unreachable = unreachable
        self.body = body


class OpenAIBackend:
    """A model behind an OpenAI-compatible chat completions endpoint."""

    def __init__(self, name: str, cfg: OpenAIBackendConfig):
        self.name = name
        self.model = cfg.model
        self.max_concurrency = cfg.max_concurrency
        self._cfg = cfg
        self._url = URL(f"{cfg.base_url}/chat/completions")
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._rpm: AsyncLimiter | None = None
        self._tpm: AsyncLimiter | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAIBackend(name={self.name!r}, model={self.model!r}, "
            f"base_url={self._cfg.base_url!r})"
        )

    # ------------------------------------------------------------ public API
    async def complete(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        params: SamplingParams,
    ) -> Completion:
        """One chat completion, retried on transient failures; raises `BackendError`."""
        key = self._api_key()
        headers: dict[str, str] | None = None
        if key:
            headers = {"Authorization": _Secret(f"Bearer {key}")}
        body = self.request_body(messages, tools, params)
        tokens = self._estimate_tokens(messages, params) if self._cfg.tpm else 0
        session = self._ensure_session()
        start = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                completion = await self._attempt(session, body, headers, tokens)
            except _Failure as f:
                if not f.transient or attempt > self._cfg.max_retries:
                    f.__context__ = None  # aiohttp errors can hold request details
                    raise self._final_error(f, attempt, key) from None
                await asyncio.sleep(self._delay(attempt, f.retry_after))
                continue
            completion.attempts = attempt
            completion.latency_s = time.perf_counter() - start
            return completion

    async def check_reachable(self) -> None:
        """Raise `UserError` unless a TCP connection to the server can be made (any HTTP status
        counts as reachable); also checks that the API key variable is set."""
        self._api_key()
        url = f"{self._cfg.base_url}/models"
        # A throwaway session: the check often runs in a different event loop than the run.
        timeout = aiohttp.ClientTimeout(total=CHECK_TIMEOUT_S)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url):
                return
        except aiohttp.ClientConnectorError as e:
            why = _connect_reason(e)
        except TimeoutError:
            why = f"no answer within {CHECK_TIMEOUT_S:g} s"
        except aiohttp.ClientError:
            return  # something answered: the server is there, whatever it said
        raise UserError(
            f"backend {self.name}: cannot reach {self._cfg.base_url}: {why}; "
            f"start the server or fix backends.{self.name}.base_url"
        )

    async def aclose(self) -> None:
        """Close the HTTP session (a no-op when none was opened in this event loop)."""
        session, self._session = self._session, None
        if session is not None and not session.closed and self._loop_is_current():
            await session.close()

    def request_body(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        params: SamplingParams,
    ) -> bytes:
        """The JSON request body. Unset fields are left out: some servers refuse unknown ones."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [m.to_openai() for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if tools:
            body["tools"] = tools
            body["tool_choice"] = _tool_choice(params.tool_choice)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        body.update(self._cfg.extra_body)
        return orjson.dumps(body)

    # ------------------------------------------------------------ one attempt
    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        headers: dict[str, str] | None,
        tokens: int,
    ) -> Completion:
        assert self._sem is not None
        async with self._sem:
            await self._throttle(tokens)
            status, raw, retry_after = await self._post(session, body, headers)
        if 200 <= status < 300:
            return parse_response(raw)
        transient = status in RETRY_STATUSES or status >= 500
        ra = _parse_retry_after(retry_after) if status in RETRY_AFTER_STATUSES else None
        raise _Failure(f"http_{status}", transient, f"HTTP {status}", ra, body=raw)

    async def _post(
        self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str] | None
    ) -> tuple[int, bytes, str | None]:
        """POST once; transport failures become `_Failure`s with messages built here, because
        aiohttp's own exception texts can carry request details."""
        try:
            async with session.post(self._url, data=body, headers=headers) as resp:
                raw = await resp.read()
                return resp.status, raw, resp.headers.get("Retry-After")
        except TimeoutError:
            detail = f"timed out (no answer within {self._cfg.timeout_s:g} s)"
            raise _Failure("timeout", True, detail) from None
        except aiohttp.ClientConnectorError as e:
            raise _Failure("connection", True, _connect_reason(e), unreachable=True) from None
        except (aiohttp.ClientError, OSError) as e:
            raise _Failure("connection", True, f"connection lost ({type(e).__name__})") from None

    async def _throttle(self, tokens: int) -> None:
        if self._rpm is not None:
            await self._rpm.acquire(1)
        if self._tpm is not None:
            await self._tpm.acquire(tokens)

    # ------------------------------------------------------------ helpers
    def _ensure_session(self) -> aiohttp.ClientSession:
        """The session for the running loop; a new loop (e.g. a second `asyncio.run`) gets a
        new session, semaphore and limiters, since asyncio objects are bound to one loop."""
        if self._session is None or self._session.closed or not self._loop_is_current():
            self._open(asyncio.get_running_loop())
        assert self._session is not None
        return self._session

    def _loop_is_current(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        cfg, n = self._cfg, self._cfg.max_concurrency
        connector = aiohttp.TCPConnector(limit=n, limit_per_host=n, keepalive_timeout=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=cfg.timeout_s),
            headers={"Content-Type": "application/json", **cfg.headers},
        )
        self._loop = loop
        self._sem = asyncio.Semaphore(n)
        self._rpm = _per_minute(cfg.rpm) if cfg.rpm else None
        self._tpm = _per_minute(cfg.tpm) if cfg.tpm else None

    def _api_key(self) -> str | None:
        var = self._cfg.api_key_env
        if var is None:
            return None
        key = os.environ.get(var)
        if key is None:
            raise UserError(
                f"backend {self.name}: environment variable {var} is not set; "
                "export it with your API key"
            )
        return _Secret(key)

    def _estimate_tokens(self, messages: list[Message], params: SamplingParams) -> int:
        """Rough token count for the tpm limiter: 4 bytes of JSON per token plus the budget."""
        size = len(orjson.dumps([m.to_openai() for m in messages]))
        return min(size // 4 + params.max_tokens, max(1, int(self._cfg.tpm or 0)))

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, raised to the server's Retry-After (capped)."""
        cfg = self._cfg
        ceiling = cfg.backoff_base_s * 2.0 ** min(attempt - 1, 60)  # 2**n overflows a float
        delay = random.uniform(0, min(cfg.backoff_max_s, ceiling))
        if retry_after is not None:
            delay = max(delay, min(retry_after, cfg.max_retry_after_s))
        return delay

    def _final_error(self, f: _Failure, attempts: int, key: str | None) -> BackendError:
        tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
        if f.unreachable:
            text = (
                f"{self.name}: server unreachable at {self._url} ({f.detail}) after {tries}; "
                f"is it running? check backends.{self.name}.base_url"
            )
        else:
            text = f"{self.name}: {f.detail} from {self._url} after {tries}"
        if f.body:
            text += f": {_snippet(f.body)}"
        if key:
            text = text.replace(key, "***")
        return BackendError(f.reason, text, attempts=attempts, transient=f.transient)


# ---------------------------------------------------------------- response parsing
def parse_response(raw: bytes) -> Completion:
    """A `Completion` from a chat.completion body; a garbled body raises a transient failure."""
    try:
        data = orjson.loads(raw)
        choice = data["choices"][0]
        return _completion(data, choice, choice["message"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise _Failure("malformed_response", True, "malformed response body", body=raw) from None


def _completion(data: dict[str, Any], choice: dict[str, Any], msg: dict[str, Any]) -> Completion:
    content = _text(msg.get("content"))
    reasoning = msg.get("reasoning_content") or msg.get("reasoning")
    if reasoning is None:
        reasoning, content = split_think(content)
    usage = data.get("usage") or {}
    return Completion(
        text=content,
        reasoning=reasoning,
        tool_calls=[_tool_call(i, tc) for i, tc in enumerate(msg.get("tool_calls") or [])],
        finish_reason=choice.get("finish_reason") or "stop",
        usage=Usage(
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
        ),
        model=data.get("model"),
    )


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def split_think(content: str) -> tuple[str | None, str]:
    """(reasoning, answer) from text that opens with a `<think>...</think>` block.

    >>> split_think("<think>add them</think>\\n\\n4")
    ('add them', '4')
    >>> split_think("4")
    (None, '4')
    """
    stripped = content.lstrip()
    if not stripped.startswith("<think>") or "</think>" not in stripped:
        return None, content
    inner, _, rest = stripped[len("<think>") :].partition("</think>")
    return inner.strip(), rest.lstrip()


def _tool_call(index: int, tc: dict[str, Any]) -> ToolCall:
    fn = tc["function"]
    return ToolCall(
        id=tc.get("id") or f"call_{index}",
        function=FunctionCall.parse(fn["name"], fn.get("arguments")),
    )


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in NAMED_TOOL_CHOICES:
        return choice
    return {"type": "function", "function": {"name": choice}}


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _per_minute(rate: float) -> AsyncLimiter:
    """A leaky bucket allowing `rate` per minute (below 1 a minute: one per 60/rate s)."""
    return AsyncLimiter(rate, 60) if rate >= 1 else AsyncLimiter(1, 60 / rate)


def _connect_reason(e: aiohttp.ClientConnectorError) -> str:
    if isinstance(e.os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, aiohttp.ClientConnectorDNSError):
        return "host name not found"
    return e.os_error.strerror or type(e.os_error).__name__


def _snippet(raw: bytes, limit: int = 200) -> str:
    """The first `limit` characters of a body, on one line."""
    return " ".join(raw[: limit * 4].decode("utf-8", "replace").split())[:limit]
