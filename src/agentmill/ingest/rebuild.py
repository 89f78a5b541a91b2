"""The ONE span -> trajectory rebuild, shared by the Studio and OTLP ingesters.

`rebuild(spans, stats, opts, source)` takes the spans of one conversation (a Studio run, an
OTel `gen_ai.conversation.id`) in any order and yields one `Trajectory` per user turn:

1. A tree per trace from the parent ids; a span whose parent is missing becomes a root
   (counted in `stats.read["missing_parent"]`). Siblings are ordered by start time (Studio's
   times are rounded, so ties are common), parents always before their children.
2. A turn is an agent span (`invoke_agent`, old protocol `span.kind` AGENT / `X.reply`) with
   no agent ancestor. Its steps are the chat and tool spans below it, not those of agents it
   called (those belong to the called agent's own dialogue).
3. The dialogue: where a chat span captured its prompt, the LAST such prompt is what the model
   actually saw; it gives the system prompt and all earlier turns. Its tail must repeat the
   turn's earlier steps (checked by role and tool-call ids; their usage and reasoning come
   from the spans); then come that call's completion, later tool results and the answer.
   Where no prompt was captured (content capture off, agentscope 2.0.0-2.0.6) the dialogue is
   assembled from the same agent's earlier turns, the agent input and the steps, never
   guessed. `metadata["prompt_check"]` says which happened: agree / differ (the prompt's
   dialogue differs from the assembled one) / mismatch (its tail did not repeat the steps;
   the prompt is kept as is) / no_prompt.

Counted in `stats.read`: missing_parent, missing_inputs (chat spans with no captured prompt),
missing_outputs, prompt_mismatch, spans_outside_turns, turns_outside_window. Skipped (by
reason): no_user_input, unparseable_repr (UserError under `strict`), no_agent_turns. See
docs/ingest.md for the record fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentmill.canonical import trajectory_dict
from agentmill.ingest import span_content as sc
from agentmill.ingest import span_messages as sm
from agentmill.ingest.base import IngestOptions, IngestStats
from agentmill.ingest.spans import Span, Turn, find_turns
from agentmill.records import Trajectory, content_hash


def rebuild(
    spans: Iterable[Span], stats: IngestStats, opts: IngestOptions, source: str
) -> Iterator[Trajectory]:
    """Trajectories, one per user turn, from the spans of ONE conversation."""
    return (Trajectory.model_validate(r) for r in records(spans, stats, opts, source))


def rebuild_dicts(
    spans: Iterable[Span], stats: IngestStats, opts: IngestOptions, source: str
) -> Iterator[dict[str, Any]]:
    """`rebuild` as the trajectories' canonical dicts (`Trajectory.to_dict()`), built without
    the models (`canonical.trajectory_dict`): what `agentmill ingest` writes."""
    return (trajectory_dict(r) for r in records(spans, stats, opts, source))


def records(
    spans: Iterable[Span], stats: IngestStats, opts: IngestOptions, source: str
) -> Iterator[dict[str, Any]]:
    """The trajectory records of ONE conversation as plain dicts, not yet validated."""
    spans = list(spans)
    if not spans:
        return
    turns, outside, orphans = find_turns(spans)
    _count(stats, "missing_parent", orphans)
    _count(stats, "spans_outside_turns", outside)
    if not turns:
        where = f"conversation {spans[0].conversation_id or spans[0].trace_id}"
        stats.skip("no_agent_turns", where)
        return
    conv = _Conversation()
    window = _window(opts)
    for index, turn in enumerate(turns):
        record = _turn_or_skip(turn, index, conv, stats, opts, source)
        if record is None:
            continue
        if not window[0] <= turn.agent.start_ns < window[1]:
            stats.read["turns_outside_window"] += 1
            continue
        stats.built += 1
        yield record


def _turn_or_skip(
    turn: Turn,
    index: int,
    conv: _Conversation,
    stats: IngestStats,
    opts: IngestOptions,
    source: str,
) -> dict[str, Any] | None:
    where = _where(turn.agent)
    try:
        built = _Builder(turn, conv, stats).build()
    except sc.Unparseable as e:
        stats.skip("unparseable_repr", f"{where}: {e}", opts.strict)
        return None
    if built is None:
        stats.skip("no_user_input", where)
        return None
    return _record(turn, index, built, source)


# --- one turn ------------------------------------------------------------------------------


@dataclass
class _Conversation:
    """What turns of one conversation share: each agent's dialogue so far (for turns whose
    prompt was not captured) and the last conversions (prompts repeat earlier turns and tool
    schemas repeat on every call: equal raw items are converted once)."""

    history: dict[str, list[sm.Msg]] = field(default_factory=dict)
    raw_prompt: list[Any] = field(default_factory=list)
    converted: list[list[sm.Msg]] = field(default_factory=list)
    raw_tools: Any = None
    tools: list[dict[str, Any]] = field(default_factory=list)

    def prompt(self, raw: list[Any]) -> list[sm.Msg]:
        out: list[sm.Msg] = []
        converted, old_raw, old = [], self.raw_prompt, self.converted
        same = True
        for i, item in enumerate(raw):
            same = same and i < len(old_raw) and old_raw[i] == item
            msgs = old[i] if same else sm.from_item(item)
            converted.append(msgs)
            out.extend(msgs)
        self.raw_prompt, self.converted = raw, converted
        return out

    def tool_schemas(self, raw: Any) -> list[dict[str, Any]]:
        if raw != self.raw_tools:
            self.raw_tools, self.tools = raw, sc.tool_definitions(raw)
        return self.tools


@dataclass
class _Built:
    messages: list[sm.Msg]
    context_len: int
    final: str | None
    check: str
    tools: list[dict[str, Any]]
    usage: dict[str, int]
    model: str | None
    tool_errors: int
    missing_inputs: int


class _Builder:
    """Rebuilds the dialogue of one turn (see the module docstring for the rules)."""

    def __init__(self, turn: Turn, conv: _Conversation, stats: IngestStats):
        self.turn, self.conv, self.stats = turn, conv, stats
        self.tool_errors = 0
        self.chats: dict[int, tuple[sm.Msg | None, dict[str, int] | None]] = {}

    def build(self) -> _Built | None:
        agent, key = self.turn.agent, _agent_key(self.turn.agent)
        user = sc.agent_input(agent) or []
        chats = [i for i, op in enumerate(self.turn.ops) if op == "chat"]
        with_prompt = [i for i in chats if sc.has_prompt(self.turn.steps[i])]
        missing = len(chats) - len(with_prompt)
        _count(self.stats, "missing_inputs", missing)
        assembled = _as_context(self.conv.history.get(key, [])) + user
        found = self._from_prompt(with_prompt, assembled)
        if found is None:
            if not user:
                return None
            self.tool_errors = 0  # the steps are read again, in full
            messages, context_len = assembled + self._steps(0, True), len(assembled)
            check = "no_prompt"
        else:
            messages, context_len, check = found
        if not any(m["role"] == "user" for m in messages[:context_len]):
            return None
        final = self._final(messages)
        self.conv.history[key] = messages
        return _Built(messages, context_len, final, check, *self._summary(chats), missing)

    def _from_prompt(
        self, with_prompt: list[int], assembled: list[sm.Msg]
    ) -> tuple[list[sm.Msg], int, str] | None:
        """(messages, context length, check) from the last captured prompt, or None."""
        for c in reversed(with_prompt):
            raw = sc.chat_prompt_raw(self.turn.steps[c])
            prompt = self.conv.prompt(raw) if raw else None
            if prompt:
                break
        else:
            return None
        before, after = self._steps(0, False, end=c), self._steps(c, True)
        cut = len(prompt) - len(before)
        if cut >= 0 and sm.signatures(prompt[cut:]) == sm.signatures(before):
            context = prompt[:cut]
            tail = [sm.enrich(p, b) for p, b in zip(prompt[cut:], before, strict=True)]
            same = sm.signatures(sm.no_system(context)) == sm.signatures(sm.no_system(assembled))
            return context + tail + after, cut, "agree" if same else "differ"
        self.stats.read["prompt_mismatch"] += 1
        users = [i for i, m in enumerate(prompt) if m["role"] == "user"]
        return (prompt + after, users[-1] + 1, "mismatch") if users else None

    def _steps(self, start: int, contents: bool, end: int | None = None) -> list[sm.Msg]:
        """Messages of steps[start:end]: completions and tool results. Without `contents`,
        tool messages carry no text (only their ids are compared) and no repr is parsed."""
        out: list[sm.Msg] = []
        known: set[str] = set()
        steps, ops = self.turn.steps, self.turn.ops
        for i in range(start, len(steps) if end is None else end):
            if ops[i] == "chat":
                msg = self._chat(i)[0]
                if msg is not None:
                    out.append(msg)
                    known.update(c["id"] for c in msg.get("tool_calls", ()))
            else:
                self._tool(steps[i], contents, out, known)
        return out

    def _chat(self, i: int) -> tuple[sm.Msg | None, dict[str, int] | None]:
        """(completion with its usage, usage) of chat step i, read once."""
        if i not in self.chats:
            span = self.turn.steps[i]
            msg, found = sc.chat_completion(span, with_usage=False), sc.chat_usage(span)
            if msg is None:
                self.stats.read["missing_outputs"] += 1
            elif found is not None:
                msg["usage"] = found
            self.chats[i] = (msg, found)
        return self.chats[i]

    def _tool(self, span: Span, contents: bool, out: list[sm.Msg], known: set[str]) -> None:
        call = sc.tool_call_of(span)
        if call["id"] not in known:  # no captured completion named this call: the tool
            sm.add_call(out, call)  # span itself says which call was made
            known.add(call["id"])
        if contents:
            text, failed = sc.tool_result(span)
        else:
            text, failed = None, sc.tool_failed_cheap(span)
        self.tool_errors += failed
        out.append({"role": "tool", "content": text, "tool_call_id": call["id"]})

    def _final(self, messages: list[sm.Msg]) -> str | None:
        """The agent's answer; appended unless the last assistant message already says it."""
        reply = sc.agent_output(self.turn.agent) or []
        answers = [m for m in reply if m["role"] == "assistant"] or reply[-1:]
        last = messages[-1] if messages else None
        repeated = last is not None and last["role"] == "assistant" and not last.get("tool_calls")
        if not answers:  # no captured output: a successful turn's last words are its answer
            ok = repeated and self.turn.agent.status != "error"
            return sm.text_of(last["content"]) if ok and last is not None else None
        content = answers[-1]["content"]
        text = sm.text_of(content)
        if not (repeated and sm.text_of(last["content"]).strip() == text.strip()):
            messages.append({"role": "assistant", "content": content})
        return text

    def _summary(
        self, chats: list[int]
    ) -> tuple[list[dict[str, Any]], dict[str, int], str | None, int]:
        tools: dict[str, dict[str, Any]] = {}
        total = {"prompt_tokens": 0, "completion_tokens": 0}
        for i in chats:
            span = self.turn.steps[i]
            for t in self.conv.tool_schemas(sc.chat_tools_raw(span)):
                tools.setdefault(t["function"]["name"], t)
            found = self._chat(i)[1]
            if found:
                total["prompt_tokens"] += found["prompt_tokens"]
                total["completion_tokens"] += found["completion_tokens"]
        model = next((m for i in reversed(chats) if (m := sc.chat_model(self.turn.steps[i]))), None)
        return list(tools.values()), total, model, self.tool_errors


def _as_context(msgs: list[sm.Msg]) -> list[sm.Msg]:
    """Earlier turns as context: without their usage (counted in their own trajectories) and
    reasoning (models are not shown it again)."""
    return [_clean(m, keep_usage=False) for m in msgs]


def _agent_key(agent: Span) -> str:
    for key in ("gen_ai.agent.id", "gen_ai.agent.name", "metadata.id", "metadata.name"):
        value = agent.get(key)
        if value:
            return str(value)
    return agent.name


def _agent_name(agent: Span) -> str | None:
    name = agent.get("gen_ai.agent.name") or agent.get("metadata.name")
    return str(name) if name else None


# --- the record ----------------------------------------------------------------------------


def _record(turn: Turn, index: int, built: _Built, source: str) -> dict[str, Any]:
    agent = turn.agent
    conv = agent.conversation_id or agent.trace_id
    messages = [_clean(m, keep_usage=True) for m in built.messages]
    context = [_clean(m, keep_usage=False) for m in built.messages[: built.context_len]]
    turn_msgs = messages[built.context_len :]
    record = {
        "id": content_hash([conv, agent.span_id]),
        "task_id": content_hash(context),
        "messages": messages,
        "tools": built.tools,
        "final_answer": built.final,
        "agent": _agent_stats(turn, turn_msgs, built),
        "status": "failed" if agent.status == "error" else "ok",
        "stop_reason": "error" if agent.status == "error" else "stop",
        "usage": built.usage,
        "latency_s": _latency(agent),
        "model": built.model,
        "provenance": _provenance(turn, index, conv, source),
        "metadata": _metadata(turn, built),
        "created_at": agent.start_ns / 1e9,
    }
    return record


def _clean(m: sm.Msg, keep_usage: bool) -> sm.Msg:
    if keep_usage:
        return m if "synthesized" not in m else {k: v for k, v in m.items() if k != "synthesized"}
    if "usage" in m or "reasoning" in m or "synthesized" in m:
        return {k: v for k, v in m.items() if k not in ("synthesized", "usage", "reasoning")}
    return m


def _agent_stats(turn: Turn, turn_msgs: list[sm.Msg], built: _Built) -> dict[str, Any]:
    by_tool: dict[str, int] = {}
    malformed = unknown = 0
    offered = {t["function"]["name"] for t in built.tools}
    for m in turn_msgs:
        for c in m.get("tool_calls", ()):
            name = c["function"]["name"]
            by_tool[name] = by_tool.get(name, 0) + 1
            malformed += "arguments" not in c["function"]
            unknown += bool(offered) and name not in offered
    return {
        "steps": turn.ops.count("chat"),
        "tool_calls": sum(by_tool.values()),
        "malformed_calls": malformed,
        "unknown_tool_calls": unknown,
        "tool_errors": built.tool_errors,
        "by_tool": by_tool,
    }


def _provenance(turn: Turn, index: int, conv: str, source: str) -> dict[str, Any]:
    agent, origin = turn.agent, turn.agent.origin
    extra = {
        "trace_id": agent.trace_id,
        "agent_span_id": agent.span_id,
        "span_ids": [agent.span_id, *(s.span_id for s in turn.steps)],
        "turn": index,
    }
    for key in ("project", "run_name", "layout", "format", "line", "missing_parent"):
        if origin.get(key) is not None:
            extra[key] = origin[key]
    return {"source": source, "file": origin.get("file"), "source_id": conv, "extra": extra}


def _metadata(turn: Turn, built: _Built) -> dict[str, Any]:
    agent = turn.agent
    out: dict[str, Any] = {"prompt_check": built.check}
    name = _agent_name(agent)
    if name:
        out["agent_name"] = name
    agent_id = agent.get("gen_ai.agent.id") or agent.get("metadata.id")
    if agent_id:
        out["agent_id"] = str(agent_id)
    if agent.scope:
        out["scope"] = agent.scope
    chats = [s for s, op in zip(turn.steps, turn.ops, strict=True) if op == "chat"]
    provider = sc.chat_provider(chats[-1]) if chats else None
    if provider:
        out["provider"] = provider
    if built.missing_inputs:
        out["chat_spans_without_prompt"] = built.missing_inputs
    if agent.status == "error" and agent.status_message:
        out["error"] = agent.status_message
    return out


def _latency(agent: Span) -> float:
    return max(0.0, (agent.end_ns - agent.start_ns) / 1e9) if agent.end_ns else 0.0


def _window(opts: IngestOptions) -> tuple[float, float]:
    return (_ns(opts.since, float("-inf")), _ns(opts.until, float("inf")))


def _ns(when: datetime | None, default: float) -> float:
    if when is None:
        return default
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp() * 1e9


def _count(stats: IngestStats, key: str, n: int) -> None:
    if n:
        stats.read[key] += n


def _where(agent: Span) -> str:
    origin = agent.origin
    place = origin.get("file", "?")
    if origin.get("line") is not None:
        place = f"{place}:{origin['line']}"
    return f"{place}: span {agent.span_id} (conversation {agent.conversation_id})"
