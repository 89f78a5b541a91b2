"""OpenAIBackend against the in-package stub server (a fake, on loopback, in a thread)."""

from __future__ import annotations

import asyncio
import gc
import itertools
import socket
import time
import traceback
import urllib.request
from typing import Any, ClassVar

import orjson
import pytest

import agentmill.backends.openai as openai_mod
from agentmill.backends.base import Backend, BackendError, Completion
from agentmill.backends.openai import OpenAIBackend, _parse_retry_after
from agentmill.config import OpenAIBackendConfig
from agentmill.errors import UserError
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall
from agentmill.testing.stub_server import run_stub_in_thread

KEY = "sk-test-0123456789abcdef"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def make(url: str, **kw: Any) -> OpenAIBackend:
    return OpenAIBackend("teacher", OpenAIBackendConfig(base_url=url, model="m", **kw))


def user(text: str) -> list[Message]:
    return [Message(role="system", content="be brief"), Message(role="user", content=text)]


def call(
    backend: OpenAIBackend,
    text: str,
    tools: list[dict[str, Any]] | None = None,
    params: SamplingParams | None = None,
) -> Completion:
    async def go() -> Completion:
        try:
            return await backend.complete(user(text), tools, params or SamplingParams())
        finally:
            await backend.aclose()

    return asyncio.run(go())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- happy path and body
def test_normal_call_parses_content_usage_and_finish_reason() -> None:
    with run_stub_in_thread() as (_, url):
        backend = make(url)
        assert isinstance(backend, Backend)
        c = call(backend, "hello world")
    assert c.text == "echo: hello world"
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (4, 3)
    assert c.finish_reason == "stop" and c.model == "m"
    assert c.attempts == 1 and c.latency_s > 0 and c.reasoning is None and c.tool_calls == []


def test_request_body_sends_only_set_fields() -> None:
    with run_stub_in_thread() as (server, url):
        backend = make(url, extra_body={"chat_template_kwargs": {"enable_thinking": False}})
        call(backend, "plain", params=SamplingParams(temperature=0.2, max_tokens=7))
        call(
            backend,
            "named",
            tools=[WEATHER_TOOL],
            params=SamplingParams(seed=3, stop=["###"], tool_choice="get_weather"),
        )
        call(
            backend, "required", tools=[WEATHER_TOOL], params=SamplingParams(tool_choice="required")
        )
        call(
            backend, "tools but none given", tools=[], params=SamplingParams(tool_choice="required")
        )
    plain = server.bodies["plain"]
    assert set(plain) == {
        "model",
        "messages",
        "temperature",
        "top_p",
        "max_tokens",
        "chat_template_kwargs",
    }
    assert (plain["temperature"], plain["max_tokens"], plain["model"]) == (0.2, 7, "m")
    assert plain["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "plain"},
    ]
    named = server.bodies["named"]
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert (named["tools"], named["seed"], named["stop"]) == ([WEATHER_TOOL], 3, ["###"])
    assert server.bodies["required"]["tool_choice"] == "required"
    assert "tools" not in server.bodies["tools but none given"]
    assert "tool_choice" not in server.bodies["tools but none given"]


def test_assistant_tool_calls_are_sent_with_string_arguments() -> None:
    history = [
        Message(role="user", content="weather?"),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(
                    id="c1", function=FunctionCall(name="get_weather", arguments={"city": "Oslo"})
                )
            ],
        ),
        Message(role="tool", tool_call_id="c1", content="sunny"),
        Message(role="user", content="thanks"),
    ]
    with run_stub_in_thread() as (server, url):
        backend = make(url)

        async def go() -> None:
            await backend.complete(history, [WEATHER_TOOL], SamplingParams())
            await backend.aclose()

        asyncio.run(go())
    sent = server.bodies["thanks"]["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Oslo"}'
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}


# ---------------------------------------------------------------- response parsing
def test_tool_calls_with_string_dict_and_malformed_arguments() -> None:
    def fn(arguments: Any) -> dict[str, Any]:
        return {"name": "get_weather", "arguments": arguments}

    calls = [
        {"id": "a", "type": "function", "function": fn('{"city": "Oslo"}')},
        {"id": "b", "type": "function", "function": fn({"city": "Rome"})},
        {"type": "function", "function": fn('{"city": Par')},  # no id, malformed arguments
    ]
    with run_stub_in_thread() as (server, url):
        server.add_reply(
            "weather",
            {"content": None, "tool_calls": calls},
            finish_reason="tool_calls",
            usage=None,
        )
        c = call(make(url), "weather", tools=[WEATHER_TOOL])
    assert c.text == "" and c.finish_reason == "tool_calls"
    assert [t.id for t in c.tool_calls] == ["a", "b", "call_2"]
    assert c.tool_calls[0].function.arguments == {"city": "Oslo"}
    assert c.tool_calls[1].function.arguments == {"city": "Rome"}
    assert c.tool_calls[2].function.arguments is None
    assert c.tool_calls[2].function.raw_arguments == '{"city": Par'
    assert (c.usage.prompt_tokens, c.usage.completion_tokens) == (0, 0)


def test_reasoning_fields_and_think_block_splitting() -> None:
    with run_stub_in_thread() as (server, url):
        server.add_reply("rc", {"content": "4", "reasoning_content": "2+2"})
        server.add_reply("r", {"content": "4", "reasoning": "two twos"})
        server.add_reply("think", {"content": "<think>\nadd them\n</think>\n\n4"})
        server.add_reply("both", {"content": "<think>x</think>4", "reasoning_content": "given"})
        server.add_reply("open", {"content": "<think>never closed"})
        backend = make(url)
        got = {k: call(backend, k) for k in ("rc", "r", "think", "both", "open")}
    assert (got["rc"].reasoning, got["rc"].text) == ("2+2", "4")
    assert (got["r"].reasoning, got["r"].text) == ("two twos", "4")
    assert (got["think"].reasoning, got["think"].text) == ("add them", "4")
    assert (got["both"].reasoning, got["both"].text) == ("given", "<think>x</think>4")
    assert (got["open"].reasoning, got["open"].text) == (None, "<think>never closed")


# ---------------------------------------------------------------- faults and retries
FAULTS = {  # last user message -> expected attempts on success
    "FAULT=429x2 a": 3,
    "FAULT=429x2 b": 3,
    "FAULT=500x2": 3,
    "FAULT=hangx1": 2,
    "FAULT=resetx1": 2,
    "FAULT=badjsonx1": 2,
}


def test_fault_batch_retries_transient_and_fails_permanent() -> None:
    good = [f"good {i}" for i in range(12)]
    keys = good + list(FAULTS) + ["FAULT=500x99", "FAULT=400x1"]
    with run_stub_in_thread(retry_after_s=1.0, hang_s=10.0) as (server, url):
        backend = make(url, timeout_s=0.5, backoff_base_s=0.01, backoff_max_s=0.05, max_retries=3)

        async def batch() -> list[Any]:
            tasks = [backend.complete(user(k), None, SamplingParams()) for k in keys]
            out = await asyncio.gather(*tasks, return_exceptions=True)
            await backend.aclose()
            return out

        results = dict(zip(keys, asyncio.run(batch()), strict=True))
        log = list(server.log)
        counts = dict(server.attempts)
    for k in good:
        assert isinstance(results[k], Completion) and results[k].attempts == 1, k
    for k, attempts in FAULTS.items():
        got = results[k]
        assert isinstance(got, Completion), f"{k}: {got!r}"
        assert (got.attempts, got.text, counts[k]) == (attempts, f"echo: {k}", attempts)
    assert_failed(results["FAULT=500x99"], "http_500", 4, transient=True)
    assert counts["FAULT=500x99"] == 4
    assert_failed(results["FAULT=400x1"], "http_400", 1, transient=False)
    assert f"HTTP 500 from {url}/chat/completions after 4 attempts: " in str(
        results["FAULT=500x99"]
    )
    assert_retry_after_respected(log, ["FAULT=429x2 a", "FAULT=429x2 b"], 1.0)


def assert_failed(err: Any, reason: str, attempts: int, transient: bool) -> None:
    assert isinstance(err, BackendError), repr(err)
    assert (err.reason, err.attempts, err.transient) == (reason, attempts, transient)
    assert "\n" not in str(err) and str(err).startswith("teacher: ")


def assert_retry_after_respected(log: list[dict[str, Any]], keys: list[str], wait: float) -> None:
    """The attempt after each 429 arrived at least Retry-After seconds later (server clock)."""
    for key in keys:
        entries = sorted((e for e in log if e["key"] == key), key=lambda e: e["attempt"])
        assert [e["outcome"] for e in entries] == ["429", "429", "ok"]
        for before, after in itertools.pairwise(entries):
            assert after["t"] - before["t"] >= wait - 0.05, (key, before, after)


def test_connection_refused_is_retried_then_reported_as_unreachable() -> None:
    backend = make(f"http://127.0.0.1:{closed_port()}/v1", max_retries=2, backoff_base_s=0.01)
    with pytest.raises(BackendError) as info:
        call(backend, "anyone there?")
    assert (info.value.reason, info.value.attempts, info.value.transient) == ("connection", 3, True)
    assert "unreachable" in str(info.value) and "backends.teacher.base_url" in str(info.value)


def test_retry_after_parsing_and_cap() -> None:
    assert _parse_retry_after("2.5") == 2.5
    assert (_parse_retry_after("Wed, 21 Oct 2099 07:28:00 GMT") or 0) > 1e8
    assert _parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert _parse_retry_after("soon") is None and _parse_retry_after(None) is None
    backend = make("http://x/v1", backoff_base_s=0.01, backoff_max_s=0.02, max_retry_after_s=3)
    assert backend._delay(1, 1e9) == 3.0
    assert 0 <= backend._delay(30, None) <= 0.02


# ---------------------------------------------------------------- the API key
def test_api_key_is_sent_and_never_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMILL_TEST_KEY", KEY)
    with run_stub_in_thread(require_key=KEY) as (_, url):
        backend = make(url, api_key_env="AGENTMILL_TEST_KEY", max_retries=1, backoff_base_s=0.01)
        assert call(backend, "hi").text == "echo: hi"
        with pytest.raises(BackendError) as info:
            call(backend, "FAULT=500x9")
    err = info.value
    assert err.reason == "http_500" and err.attempts == 2
    tb = traceback.TracebackException.from_exception(err, capture_locals=True)
    shown = [str(err), repr(err), repr(err.args), repr(backend), "".join(tb.format())]
    assert all(KEY not in s for s in shown)


def test_wrong_key_fails_at_once_and_missing_variable_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTMILL_TEST_KEY", "sk-wrong")
    monkeypatch.delenv("AGENTMILL_TEST_MISSING", raising=False)
    with run_stub_in_thread(require_key=KEY) as (_, url):
        with pytest.raises(BackendError) as info:
            call(make(url, api_key_env="AGENTMILL_TEST_KEY"), "hi")
        assert (info.value.reason, info.value.attempts) == ("http_401", 1)
        with pytest.raises(UserError, match="AGENTMILL_TEST_MISSING is not set; export it"):
            call(make(url, api_key_env="AGENTMILL_TEST_MISSING"), "hi")


# ---------------------------------------------------------------- rate limits
def test_rpm_limit_delays_requests_beyond_the_burst() -> None:
    # A leaky bucket of 120/min lets 120 through at once, then one more every 0.5 s.
    with run_stub_in_thread() as (server, url):
        backend = make(url, rpm=120, max_concurrency=200)

        async def burst() -> float:
            start = time.time()
            await asyncio.gather(
                *(backend.complete(user(f"r{i}"), None, SamplingParams()) for i in range(122))
            )
            await backend.aclose()
            return start

        start = asyncio.run(burst())
        times = sorted(e["t"] for e in server.log)
    assert len(times) == 122
    assert times[-1] - start >= 0.95
    assert times[-1] - times[-2] >= 0.4


class RecordingLimiter:
    """Stands in for AsyncLimiter: remembers how it was built and what was acquired."""

    made: ClassVar[list[RecordingLimiter]] = []

    def __init__(self, max_rate: float, time_period: float = 60):
        self.max_rate, self.time_period = max_rate, time_period
        self.acquired: list[float] = []
        RecordingLimiter.made.append(self)

    async def acquire(self, amount: float = 1) -> None:
        self.acquired.append(amount)


def test_rpm_and_tpm_limiters_acquire_the_right_amounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(openai_mod, "AsyncLimiter", RecordingLimiter)
    RecordingLimiter.made = []
    params = SamplingParams(max_tokens=64)
    with run_stub_in_thread() as (_, url):
        call(make(url, rpm=100, tpm=10_000), "count me", params=params)
        call(make(url, tpm=50), "count me", params=params)
    rpm, tpm, small = RecordingLimiter.made
    expected = len(orjson.dumps([m.to_openai() for m in user("count me")])) // 4 + 64
    assert (rpm.max_rate, rpm.time_period, rpm.acquired) == (100, 60, [1])
    assert (tpm.max_rate, tpm.acquired) == (10_000, [expected])
    assert small.acquired == [50]  # capped at tpm, or the limiter would refuse it


# ---------------------------------------------------------------- reachability, loops
def test_check_reachable() -> None:
    backend = make(f"http://127.0.0.1:{closed_port()}/v1")
    with pytest.raises(UserError) as info:
        asyncio.run(backend.check_reachable())
    assert "backend teacher: cannot reach http://127.0.0.1:" in str(info.value)
    assert "connection refused; start the server or fix backends.teacher.base_url" in str(
        info.value
    )
    with run_stub_in_thread() as (_, url):
        ok = make(url)
        asyncio.run(ok.check_reachable())


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_backend_survives_a_new_event_loop() -> None:
    with run_stub_in_thread() as (_, url):
        backend = make(url)
        # No aclose() here: the session is left behind in a closed loop, as after a crash.
        first = asyncio.run(backend.complete(user("one"), None, SamplingParams()))
        second = call(backend, "two")
        gc.collect()  # the abandoned session warns when collected: keep that in this test
    assert (first.text, second.text) == ("echo: one", "echo: two")


def test_stub_server_stats_models_and_jsonl_log(tmp_path: Any) -> None:
    log = tmp_path / "requests.jsonl"
    with run_stub_in_thread(log_path=log) as (_, url):
        call(make(url, backoff_base_s=0.01), "FAULT=500x1 once")
        stats = orjson.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/stats").read())
        models = orjson.loads(urllib.request.urlopen(url + "/models").read())
    assert stats == {"requests": 2, "by_key": {"FAULT=500x1 once": 2}}
    assert models["data"][0]["id"] == "stub"
    lines = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert [(x["attempt"], x["outcome"]) for x in lines] == [(1, "500"), (2, "ok")]
    assert lines[0]["t"] <= lines[1]["t"]
