"""Tasks from tool schemas (APIGen-style): a user query and the calls that answer it.

Candidate `i` asks the generator for one of the configured kinds, in rotation: `single`,
`parallel` (2+ independent calls, one step), `multi_step` (a later call needs an earlier
result), `no_tool` (no call is right) and `ask` (a required argument is missing: the right
reply asks for it). Each candidate must pass, in order:

1. parse: a JSON object with `query`, `calls` and `ask_for` (`unparseable`, `bad_shape`)
2. kind: the calls fit the kind asked for (`kind_mismatch`)
3. format: each call names a known tool (`unknown_tool`) and its arguments validate against
   the tool's JSON schema (`missing_required`, `wrong_type`, `unknown_argument`, `bad_value`,
   `invalid_arguments`)
4. grounding: each string argument of a first-step call occurs in the query (enum values
   exempt), and the query is not the worked example's (`ungrounded_argument`,
   `copied_example`)
5. execution: each call of an executable tool succeeds; its result is stored
   (`execution_error`)
6. semantic: the judge, when configured, confirms the calls answer the query
   (`judge_rejected`, `judge_error`)

A kept task carries `expected_calls` (and `ask_for`) exactly as the `tool_call` reward reads.

Loading tool sets and the format check live in `toolsets.py`.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import Any

import orjson

from agentmill.curation.dedup import normalize
from agentmill.records import ExpectedCall, Task
from agentmill.scoring.judge import parse_verdict
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.engine import Models, Outcome, ask, drop, generate, unparseable
from agentmill.synth.toolsets import ToolSet, format_problem, load_tools

_WORDS = re.compile(r"[^\W\d_]{2,}")
KIND_TEXT = {
    "single": "needs exactly ONE call to one tool",
    "parallel": "needs TWO OR MORE independent calls made at the same time (all with step 0)",
    "multi_step": "needs two or more calls where a later call (step 1) uses what an earlier "
    "call (step 0) returns",
    "no_tool": "needs NO tool at all (small talk or general knowledge); `calls` is []",
    "ask": "would need a tool but leaves out a REQUIRED argument of it, so the assistant must "
    "ask for it; `calls` is [] and `ask_for` names the missing argument",
}
SYSTEM = (
    "You write test cases for an assistant that can call tools. Reply with ONE JSON object "
    'and nothing else, shaped like {"query": "<what the user writes>", "calls": [{"name": '
    '"<tool name>", "arguments": {...}, "step": 0}], "ask_for": []}. Use concrete values in '
    "the query and exactly those values in the arguments."
)
JUDGE_SYSTEM = (
    "You check test cases for a tool-using assistant. Decide whether the expected tool calls "
    "are exactly what a careful assistant should do for the user's query: the right tools, "
    "argument values taken from the query, nothing missing or extra. When no call is "
    "expected, decide whether that is right (no tool needed, or a required value is truly "
    'missing from the query). Reply with one JSON object: {"reason": "<one sentence>", '
    '"result": "GOOD or BAD"}'
)


# ---------------------------------------------------------------- reading a candidate
def read_calls(obj: dict[str, Any]) -> tuple[str, list[ExpectedCall], list[str]] | str:
    """(query, calls, ask_for) from the generator's object, or a description of what is wrong."""
    query, calls, ask_for = obj.get("query"), obj.get("calls") or [], obj.get("ask_for") or []
    if not isinstance(query, str) or len(_WORDS.findall(query)) < 3:
        return f"`query` must be a request of 3+ words, got {query!r:.80}"
    if isinstance(ask_for, str):
        ask_for = [ask_for]
    if not isinstance(calls, list) or not isinstance(ask_for, list):
        return "`calls` and `ask_for` must be lists"
    out = []
    for c in calls:
        args = c.get("arguments", {}) if isinstance(c, dict) else None
        if isinstance(args, str):
            try:
                args = orjson.loads(args or "{}")
            except orjson.JSONDecodeError:
                args = None
        step = c.get("step", 0) if isinstance(c, dict) else 0
        if (
            not isinstance(c, dict)
            or not isinstance(c.get("name"), str)
            or not isinstance(args, dict)
        ):
            return f"a call is not {{name, arguments}}: {str(c)[:120]}"
        out.append(
            ExpectedCall(name=c["name"], arguments=args, step=step if isinstance(step, int) else 0)
        )
    return query.strip(), out, [str(a) for a in ask_for]


def kind_problem(
    kind: str, calls: list[ExpectedCall], ask_for: list[str], tools: ToolSet
) -> str | None:
    """Why the calls do not fit `kind` (None when they do).

    >>> kind_problem("parallel", [ExpectedCall(name="a")], [], ToolSet({}, {}))
    'parallel needs 2+ calls in one step, got 1 call(s) in 1 step(s)'
    """
    steps = {c.step for c in calls}
    ok = {
        "single": len(calls) == 1,
        "parallel": len(calls) >= 2 and len(steps) == 1,
        "multi_step": len(calls) >= 2 and len(steps) >= 2,
        "no_tool": not calls and not ask_for,
        "ask": not calls and bool(ask_for),
    }[kind]
    if not ok:
        want = {
            "single": "exactly 1 call",
            "parallel": "2+ calls in one step",
            "multi_step": "2+ calls over 2+ steps",
            "no_tool": "no call and no ask_for",
            "ask": "no call and an ask_for",
        }[kind]
        return f"{kind} needs {want}, got {len(calls)} call(s) in {len(steps)} step(s)"
    if kind == "ask":
        required = {
            r
            for s in tools.schemas.values()
            for r in s["function"]["parameters"].get("required", [])
        }
        unknown = [a for a in ask_for if a not in required]
        if unknown:
            return f"ask_for {unknown} names no required argument of any tool"
    return None


async def execute(
    calls: list[ExpectedCall], tools: ToolSet, timeout_s: float = 10.0
) -> list[dict[str, Any]] | str:
    """Call every executable tool, step by step; the results, or the first error as text."""
    results = []
    for c in sorted(calls, key=lambda c: c.step):
        tool = tools.callables.get(c.name)
        if tool is None:
            continue  # a schema-only tool: nothing to run
        try:
            out = await asyncio.wait_for(tool.call(c.arguments), timeout_s)
        except Exception as e:  # the user's tool: any failure drops this candidate
            return f"{c.name}: {type(e).__name__}: {e}"[:300]
        results.append({"name": c.name, "step": c.step, "result": out})
    return results


_CALL_COUNTS = {"single": (1, 1), "parallel": (2, 3), "multi_step": (2, 3)}


def candidate_schema(kind: str, tools: ToolSet) -> dict[str, Any]:
    """The JSON schema of a candidate of `kind` (the forced `submit` tool's parameters): each
    call is one of the tools with that tool's own parameters, in the number the kind needs."""
    calls: dict[str, Any] = {"type": "array", "maxItems": 0}
    if kind in _CALL_COUNTS:
        low, high = _CALL_COUNTS[kind]
        options = [_call_schema(s) for s in tools.schema_list()]
        calls = {"type": "array", "items": {"anyOf": options}, "minItems": low, "maxItems": high}
    ask_for: dict[str, Any] = {"type": "array", "maxItems": 0}
    if kind == "ask":
        names = sorted({r for s in tools.schema_list() for r in _required(s)})
        ask_for = {"type": "array", "items": {"enum": names}, "minItems": 1, "maxItems": 1}
    properties = {"query": {"type": "string"}, "calls": calls, "ask_for": ask_for}
    return {"type": "object", "properties": properties, "required": ["query", "calls", "ask_for"]}


def _call_schema(schema: dict[str, Any]) -> dict[str, Any]:
    fn = schema["function"]
    properties = {
        "name": {"const": fn["name"]},
        "arguments": fn["parameters"],
        "step": {"type": "integer", "minimum": 0, "maximum": 3},
    }
    return {"type": "object", "properties": properties, "required": ["name", "arguments", "step"]}


def _required(schema: dict[str, Any]) -> list[str]:
    return list(schema["function"]["parameters"].get("required", []))


def _demo_tool(name: str, about: str, param: str) -> dict[str, Any]:
    properties = {param: {"type": "string", "description": f"the {param}"}}
    parameters = {"type": "object", "properties": properties, "required": [param]}
    return {
        "type": "function",
        "function": {"name": name, "description": about, "parameters": parameters},
    }


# The worked exchange shown before each prompt: other tools, the same kinds of reply.
DEMO_TOOLS = ToolSet(
    {
        "get_time": _demo_tool("get_time", "The local time in a city.", "city"),
        "find_city": _demo_tool("find_city", "The city a landmark is in.", "landmark"),
    },
    {},
)
_TIME = {"name": "get_time", "arguments": {"city": "Lisbon"}, "step": 0}
DEMO_REPLIES: dict[str, dict[str, Any]] = {
    "single": {"query": "What time is it in Lisbon right now?", "calls": [_TIME], "ask_for": []},
    "parallel": {
        "query": "What time is it in Lisbon and in Oslo?",
        "calls": [_TIME, {**_TIME, "arguments": {"city": "Oslo"}}],
        "ask_for": [],
    },
    "multi_step": {
        "query": "What time is it in the city where the Eiffel Tower stands?",
        "calls": [
            {"name": "find_city", "arguments": {"landmark": "Eiffel Tower"}, "step": 0},
            {"name": "get_time", "arguments": {"city": "Paris"}, "step": 1},
        ],
        "ask_for": [],
    },
    "no_tool": {"query": "What does the word 'noon' mean?", "calls": [], "ask_for": []},
    "ask": {"query": "What time is it in my city at the moment?", "calls": [], "ask_for": ["city"]},
}


_DEMO_QUERIES = {normalize(r["query"]) for r in DEMO_REPLIES.values()}


def ungrounded_value(query: str, calls: list[ExpectedCall], tools: ToolSet) -> str | None:
    """The first string argument of a first-step call that the query does not contain (enum
    values exempt; later steps may take their values from earlier results).

    >>> calls = [ExpectedCall(name="get_weather", arguments={"city": "Oslo", "unit": "celsius"})]
    >>> ungrounded_value("How cold is it in Lisbon?", calls, ToolSet({}, {}))
    "get_weather: city 'Oslo' does not occur in the query"
    """
    first = min((c.step for c in calls), default=0)
    text = f" {normalize(query)} "
    for c in calls:
        props = tools.schemas.get(c.name, {}).get("function", {}).get("parameters", {})
        props = props.get("properties", {})
        for name, value in c.arguments.items():
            if c.step != first or not isinstance(value, str) or "enum" in props.get(name, {}):
                continue
            if f" {normalize(value)} " not in text:
                return f"{c.name}: {name} {value!r} does not occur in the query"
    return None


def tools_prompt(tools: ToolSet, kind: str, focus: str) -> str:
    """The generator's request: the tools, the kind of query, a tool to prefer."""
    lines = ["Tools:"]
    for s in tools.schema_list():
        fn = s["function"]
        params = orjson.dumps(fn["parameters"].get("properties", {})).decode()
        required = fn["parameters"].get("required", [])
        about = fn.get("description", "")
        lines.append(f"- {fn['name']}: {about} parameters={params} required={required}")
    lines += ["", f"Write one user query that {KIND_TEXT[kind]}.", f"Prefer the tool {focus}."]
    return "\n".join(lines)


class ToolSynth:
    """The tools synthesizer of one `synth` source."""

    def __init__(self, src: SynthSourceConfig, models: Models) -> None:
        self.src, self.models = src, models
        self.tools = load_tools(src.tools)
        self.seed = src._context.get("seed", 0)

    async def candidate(self, index: int) -> Outcome:
        kinds = self.src.tool_kinds
        kind = kinds[index % len(kinds)]
        key = f"synth-tools#{index}"
        focus = random.Random(f"{self.seed}:{index}").choice(list(self.tools.schemas))
        prompt = (SYSTEM, tools_prompt(self.tools, kind, focus))
        shot = (tools_prompt(DEMO_TOOLS, kind, "get_time"), DEMO_REPLIES[kind])
        schema = candidate_schema(kind, self.tools)
        gen = self.models.generator
        obj, text = await generate(gen, self.src, prompt, schema, key, index, shot)
        if obj is None:
            return unparseable(index, text, kind=kind)
        read = read_calls(obj)
        if isinstance(read, str):
            return drop(index, "bad_shape", read, kind=kind, generated=obj)
        return await self.check(index, kind, *read, generated=obj)

    async def check(
        self,
        index: int,
        kind: str,
        query: str,
        calls: list[ExpectedCall],
        ask_for: list[str],
        generated: dict[str, Any],
    ) -> Outcome:
        """Checks 2-6 of the module docstring on one parsed candidate."""
        cand = {"kind": kind, "generated": generated}
        if normalize(query) in _DEMO_QUERIES:
            return drop(index, "copied_example", "the query is the worked example's", **cand)
        problem = kind_problem(kind, calls, ask_for, self.tools)
        if problem:
            return drop(index, "kind_mismatch", problem, **cand)
        found = format_problem(calls, self.tools)
        if found:
            return drop(index, found[0], found[1], **cand)
        ungrounded = ungrounded_value(query, calls, self.tools) if self.src.grounded else None
        if ungrounded:
            return drop(index, "ungrounded_argument", ungrounded, **cand)
        results = await execute(calls, self.tools) if self.src.execute else []
        if isinstance(results, str):
            return drop(index, "execution_error", results, **cand)
        if self.models.judge is not None:
            verdict, reason = await self.judge(index, query, calls, ask_for, results)
            if verdict != "GOOD":
                return drop(
                    index, "judge_rejected" if verdict == "BAD" else "judge_error", reason, **cand
                )
        return Outcome(index, task=self.task(index, kind, query, calls, ask_for, results))

    async def judge(
        self,
        index: int,
        query: str,
        calls: list[ExpectedCall],
        ask_for: list[str],
        results: list[dict[str, Any]],
    ) -> tuple[str, str]:
        shown = [c.to_dict() for c in calls]
        user = f"## Query\n{query}\n\n## Expected calls\n{orjson.dumps(shown).decode()}"
        if ask_for:
            user += f"\n\n## Missing argument the assistant must ask for\n{', '.join(ask_for)}"
        if results:
            user += f"\n\n## Results\n{orjson.dumps(results).decode()[:2000]}"
        params = self.src.params.model_copy(update={"temperature": 0.0, "max_tokens": 256})
        text = await ask(
            self.models.judge, JUDGE_SYSTEM, user, params, f"synth-tools-judge#{index}"
        )  # type: ignore[arg-type]
        return parse_verdict(text)

    def task(
        self,
        index: int,
        kind: str,
        query: str,
        calls: list[ExpectedCall],
        ask_for: list[str],
        results: list[dict[str, Any]],
    ) -> Task:
        metadata: dict[str, Any] = {"synth": "tools", "synth_kind": kind, "synth_index": index}
        if ask_for:
            metadata["ask_for"] = ask_for
        if results:
            metadata["tool_results"] = results
        return Task.create(
            query, tools=self.tools.schema_list(), expected_calls=calls, metadata=metadata
        )
