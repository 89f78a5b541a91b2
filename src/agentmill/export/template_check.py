"""Render exported records (SFT, prompt-completion, DPO pairs) through a chat template and check
what a trainer sees: each message's text in order, tool calls, schemas and results (each on its
own), the system prompt first, a loss mask on exactly the assistant turns: TRL's mask from
`{% generation %}` markers, checked against our span search (assistant turn k is what
`messages[:k+1]` adds to `messages[:k]` + generation prompt), which stands in without markers.

    agentmill check-template export/sft.jsonl --tokenizer smollm2-135m

>>> pair = {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant",
...     "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}
>>> [(label, len(chat[0])) for label, chat in conversations(pair)]
[(' (chosen)', 2), (' (rejected)', 2)]
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentmill.errors import UserError
from agentmill.rollout.protocol import TEMPLATE_PATH, load_template  # the tool protocol's own

Span = tuple[int, int]
Messages = list[dict[str, Any]]
Chat = tuple[Messages, Any, dict[str, Any]]  # messages, tools, chat template kwargs
Render = Callable[[Messages, bool], str]  # (messages, add_generation_prompt) -> text

KINDS: dict[str, str] = {  # kind -> what it means and how to fix it
    "render_error": "the template raised on the record",
    "content_missing": "a message's text is not rendered",
    "out_of_order": "a message's text comes before an earlier message's",
    "system_moved": "the template moves the system prompt from the start",
    "tool_call_missing": "a call's name or argument is not rendered (arguments must be dicts)",
    "tool_schema_missing": "a tool in `tools` is not rendered: the model never sees it",
    "tool_result_missing": "a tool result is not rendered (dropped, or one of a run kept)",
    "tool_result_merged": "consecutive tool results are run together with no separator",
    "empty_think_supervised": "an empty <think></think> is in the loss mask: it will be learned",
    "mask_not_assistant": "the loss mask covers tokens outside the assistant turns",
    "assistant_unmasked": "assistant tokens (text, calls, end of turn) are outside the loss mask",
    "no_generation_markers": "TRL's assistant_only_loss needs {% generation %} markers",
}
_MARKERS = re.compile(r"\{%-?\s*generation\s*-?%\}")
_EMPTY_THINK = re.compile(r"<think>\s*</think>")


@dataclass
class Report:
    """What `check_file` found: records affected per problem kind, with a few examples."""

    path: str
    tokenizer: str
    template: str
    markers: bool
    max_examples: int = 3
    checked: int = 0
    flagged: int = 0  # records with at least one problem
    skipped: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.counts

    def add_record(self, where: str, found: list[tuple[str, dict[str, str]]]) -> None:
        """One record's problems, per conversation: (label, kind -> detail)."""
        self.checked += 1
        self.flagged += any(problems for _, problems in found)
        self.counts.update({kind for _, problems in found for kind in problems})
        for label, problems in found:
            for kind, detail in problems.items():
                shown = self.examples.setdefault(kind, [])
                if len(shown) < self.max_examples:
                    shown.append({"record": where + label, "detail": detail})

    def to_dict(self) -> dict[str, Any]:
        keys = ("path", "tokenizer", "template", "markers", "checked", "flagged", "clean")
        kinds = sorted(self.counts, key=lambda k: (-self.counts[k], list(KINDS).index(k)))
        problems = {
            k: {"count": self.counts[k], "hint": KINDS[k], "examples": self.examples[k]}
            for k in kinds
        }
        return {k: getattr(self, k) for k in keys} | {"skipped": self.skipped, "problems": problems}


def load_tokenizer(
    tokenizer: str | Any, template: str | Path | None = None
) -> tuple[Any, str, str]:
    """(tokenizer, template text, where the template came from), never touching the network.
    `tokenizer`: the embedded model's name (default template: agentmill's tool template), a
    local folder (default: its own template) or a loaded tokenizer; `template`: file or text."""
    from agentmill.models import EMBEDDED

    name = str(tokenizer) if isinstance(tokenizer, str | Path) else None
    tok = _from_folder(name) if name is not None else tokenizer
    if isinstance(template, str):
        return tok, template, "template text"
    embedded = name in EMBEDDED and not Path(name).exists()
    return (tok, *_template_for(tok, embedded, template))


def _from_folder(name: str) -> Any:
    from transformers import AutoTokenizer

    from agentmill.models import EMBEDDED, resolve_model

    path = Path(name).expanduser()
    if name in EMBEDDED and not path.exists():
        path = resolve_model(name)
    elif not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise UserError(
            f"tokenizer '{name}' is neither a local tokenizer folder nor an embedded model "
            f"({', '.join(EMBEDDED)}); pass a folder with tokenizer.json (never downloaded)"
        )
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if not getattr(tok, "is_fast", False):  # token offsets need a fast tokenizer
        raise UserError(f"tokenizer in {path} is not a fast tokenizer; add its tokenizer.json")
    return tok


def _template_for(tok: Any, embedded: bool, template: Path | None) -> tuple[str, str]:
    if template is not None:
        if not template.is_file():
            raise UserError(f"template file {template} not found; pass an existing .jinja file")
        return template.read_text(encoding="utf-8"), str(template)
    if embedded:
        return load_template(), f"{TEMPLATE_PATH.name} (agentmill's tool template)"
    own, where = tok.chat_template, tok.name_or_path or "the tokenizer"
    if isinstance(own, dict):  # named templates: the tool one when there is one
        own = own.get("tool_use") or own.get("default")
    if not isinstance(own, str):
        raise UserError(f"{where} has no chat template; pass --template FILE")
    return own, f"{where} (its own chat template)"


def conversations(record: Any) -> list[tuple[str, Chat]]:
    """The conversations a record trains on, labelled; [] when it is no SFT or DPO record."""
    if not isinstance(record, dict):
        return []
    tools = json.loads(t) if isinstance(t := record.get("tools"), str) else t  # TRL allows JSON
    kwargs = record.get("chat_template_kwargs") or {}
    parts = {k: record.get(k) for k in ("messages", "prompt", "completion", "chosen", "rejected")}
    if not all(isinstance(v, list) for v in parts.values() if v is not None):
        return []
    if parts["messages"]:
        return [("", (parts["messages"], tools, kwargs))]
    ends = {"completion": "", "chosen": " (chosen)", "rejected": " (rejected)"}
    prompt = parts["prompt"] or []
    return [(label, (prompt + parts[k], tools, kwargs)) for k, label in ends.items() if parts[k]]


def _text(content: Any) -> str:
    """A message's text, stripped (templates often trim it)."""
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content.strip() if isinstance(content, str) else ""


def _needles(value: Any) -> Iterator[tuple[str, ...]]:
    """The forms a rendered argument value may take (keys of objects included)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (str(k),)
            yield from _needles(v)
    elif isinstance(value, list):
        for v in value:
            yield from _needles(v)
    elif isinstance(value, str):
        if value.strip():
            yield (value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1])
    else:
        yield (json.dumps(value), str(value))


def _arguments(fn: dict[str, Any]) -> Any:
    args = fn.get("arguments")
    try:
        return json.loads(args) if isinstance(args, str) else args
    except ValueError:
        return args


def _within(token: Span, span: Span) -> bool:
    return span[0] <= token[0] and token[1] <= span[1]


def _overlaps(token: Span, span: Span) -> bool:
    return token[0] < span[1] and span[0] < token[1]


def renderer(tok: Any, template: str, chat: Chat) -> Render:
    """`render(messages, add_generation_prompt)` with one record's tools and kwargs."""
    kw = {"tools": chat[1], "chat_template": template, "tokenize": False, **chat[2]}
    return lambda ms, gen: str(tok.apply_chat_template(ms, add_generation_prompt=gen, **kw))


def assistant_spans(render: Render, messages: Messages) -> dict[int, Span] | None:
    """Character span of each assistant turn (by message index), found by rendering prefixes;
    None when the template does not render prefixes stably (or refuses a prefix)."""
    try:
        full, spans = render(messages, False), {}
        for k, m in enumerate(messages):
            if m.get("role") == "assistant":
                head, turn = render(messages[:k], True), render(messages[: k + 1], False)
                if not (turn.startswith(head) and full.startswith(turn)):
                    return None
                spans[k] = (len(head), len(turn.rstrip()))
        return spans
    except Exception:  # a template that refuses a prefix: no span search for this record
        return None


def token_mask(
    tok: Any, template: str, chat: Chat, text: str, spans: dict[int, Span] | None
) -> tuple[list[Span], list[int]]:
    """(character span of each token, loss mask): from the template's generation markers when
    it has them (what TRL trains on), else the tokens inside `spans`."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if not _MARKERS.search(template):
        return offsets, [int(any(_within(o, s) for s in (spans or {}).values())) for o in offsets]
    kw = {"tools": chat[1], "chat_template": template, "return_dict": True, **chat[2]}
    out = tok.apply_chat_template(chat[0], return_assistant_tokens_mask=True, **kw)
    return offsets, list(out["assistant_masks"])


@dataclass
class _Walk:
    """Finds each message's parts in the rendering, in order, and flags what it cannot."""

    text: str
    messages: Messages
    spans: dict[int, Span] | None  # exact assistant turns, when the span search worked
    found: dict[int, list[Span]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)

    def flag(self, kind: str, detail: str) -> None:
        self.problems.setdefault(kind, detail)

    def mark(self, i: int, start: int, end: int) -> int:
        self.found.setdefault(i, []).append((start, end))
        return end

    def run(self, tools: Any) -> _Walk:
        for t in tools if isinstance(tools, list) else []:
            fn = t.get("function", t) if isinstance(t, dict) else None
            fn = fn if isinstance(fn, dict) else {}
            said = [str(fn.get(k) or "") for k in ("name", "description")]  # a name may be a word
            if any(x and x not in self.text for x in said):
                self.flag("tool_schema_missing", f"tool {said[0]!r}: name or description lost")
        cursor = self.system()
        for i, m in enumerate(self.messages):
            if i > 0 or m.get("role") != "system":
                cursor = self.message(i, m, cursor)
        self.tool_gaps()
        return self

    def system(self) -> int:
        """Where the walk starts: after the system prompt when it leads the rendering."""
        if not self.messages or self.messages[0].get("role") != "system":
            return 0
        system = _text(self.messages[0].get("content"))
        first = next((c for m in self.messages[1:] if (c := _text(m.get("content")))), None)
        if (pos := self.text.find(system)) < 0:
            self.flag("content_missing", f"message 0 (system): {system[:60]!r}")
        elif first is not None and 0 <= self.text.find(first) < pos:
            self.flag("system_moved", f"system prompt at char {pos}, after {first[:60]!r}")
        else:
            return self.mark(0, pos, pos + len(system))
        return 0

    def message(self, i: int, m: dict[str, Any], cursor: int) -> int:
        role, content = m.get("role"), _text(m.get("content"))
        stop = self.spans[i][1] if self.spans and i in self.spans else len(self.text)
        if content and (pos := self.text.find(content, cursor, stop)) >= 0:
            cursor = self.mark(i, pos, pos + len(content))
        elif content and role == "tool":
            self.flag("tool_result_missing", f"message {i} (tool): {content[:60]!r}")
        elif content:
            kind = "out_of_order" if content in self.text else "content_missing"
            self.flag(kind, f"message {i} ({role}): {content[:60]!r}")
        for call in m.get("tool_calls") or []:
            cursor = self.call(i, call.get("function") or call, cursor, stop)
        return cursor

    def call(self, i: int, fn: dict[str, Any], cursor: int, stop: int) -> int:
        """A call's name, then its argument keys and values, within the assistant's turn."""
        name = str(fn.get("name") or "")
        if (start := self.text.find(name, cursor, stop)) < 0:
            self.flag("tool_call_missing", f"message {i}: call name {name!r} not rendered")
            return cursor
        end = self.mark(i, start, start + len(name))
        for needle in _needles(_arguments(fn)):
            hits = [(p, len(n)) for n in needle if (p := self.text.find(n, start, stop)) >= 0]
            if hits:
                pos, size = min(hits)
                end = max(end, self.mark(i, pos, pos + size))
            else:
                self.flag("tool_call_missing", f"message {i}: {name} argument {needle[0]!r} lost")
        return end

    def tool_gaps(self) -> None:
        """Consecutive tool results need a separator of their own (a tag, a header, a token)."""
        for i in range(len(self.messages) - 1):
            pair = (self.messages[i].get("role"), self.messages[i + 1].get("role"))
            if pair == ("tool", "tool") and i in self.found and i + 1 in self.found:
                gap = self.text[self.found[i][-1][1] : self.found[i + 1][0][0]]
                if not gap.strip(" \t\r\n,;"):
                    self.flag("tool_result_merged", f"messages {i} and {i + 1}: joined by {gap!r}")

    def parts(self, assistant: bool) -> list[Span]:
        found = self.found.items()
        return [
            s
            for i, ss in found
            if (self.messages[i].get("role") == "assistant") == assistant
            for s in ss
        ]

    def mask(self, offsets: list[Span], mask: list[int]) -> None:
        """Flag masked tokens off the assistant turns (without exact turns: on other messages'
        parts), unmasked ones inside them, and masked empty thinks."""
        turns = list(self.spans.values()) if self.spans is not None else self.parts(True)
        others = self.parts(False)
        for o, bit in zip(offsets, mask, strict=False):
            if not self.text[o[0] : o[1]].strip():
                continue  # whitespace at a turn's edge is the template's business
            if self.spans is not None:
                outside = not any(_overlaps(o, s) for s in turns)
            else:
                outside = any(_overlaps(o, s) for s in others)
            shown = repr(self.text[o[0] : o[1] + 40])
            if bit and outside:
                self.flag("mask_not_assistant", f"masked {shown}")
            if not bit and any(_within(o, s) for s in turns):
                self.flag("assistant_unmasked", f"unmasked {shown}")
        for match in _EMPTY_THINK.finditer(self.text):
            if any(b and _overlaps(o, match.span()) for o, b in zip(offsets, mask, strict=False)):
                self.flag("empty_think_supervised", f"{match.group()!r} at char {match.start()}")


def check_conversation(tok: Any, template: str, chat: Chat) -> dict[str, str]:
    """Problems of one conversation: kind -> detail of the first occurrence."""
    messages, render = chat[0], renderer(tok, template, chat)
    try:
        text = render(messages, False)
    except Exception as e:  # any template failure is this record's problem, not the run's
        return {"render_error": f"{type(e).__name__}: {e}"}
    spans = assistant_spans(render, messages)
    w = _Walk(text, messages, spans).run(chat[1])
    markers = bool(_MARKERS.search(template))
    if markers or spans is not None:
        w.mask(*token_mask(tok, template, chat, text, spans))
    if not markers:
        how = "mask checked by span search" if spans is not None else "mask not checkable"
        fix = "wrap the assistant's output in {% generation %}...{% endgeneration %}"
        w.flag("no_generation_markers", f"{how}; {fix}, or pass --template {TEMPLATE_PATH}")
    return w.problems


def check_file(
    path: Path,
    tokenizer: str | Any,
    template: str | Path | None = None,
    max_examples: int = 3,
    strict: bool = False,
) -> Report:
    """Check every record of an exported JSONL file. `tokenizer`: a name, a folder, or a
    loaded tokenizer; `template`: a file, template text, or None for the default. Lines that
    are no record are counted in `skipped` (with `strict` they raise `UserError`)."""
    from agentmill.store import iter_jsonl

    if not path.is_file():
        raise UserError(f"{path} not found; pass an exported .jsonl file (agentmill export)")
    tok, text, source = load_tokenizer(tokenizer, template)
    name = str(tokenizer) if isinstance(tokenizer, str | Path) else type(tokenizer).__name__
    report = Report(str(path), name, source, bool(_MARKERS.search(text)), max_examples)
    for lineno, line in iter_jsonl(path):
        try:
            chats = conversations(json.loads(line))
        except ValueError:
            report.skipped["bad_json"] += 1
            continue
        if not chats:
            report.skipped["not_sft_or_dpo_record"] += 1
            continue
        found = [(label, check_conversation(tok, text, chat)) for label, chat in chats]
        report.add_record(f"line {lineno}", found)
    if report.checked == 0:
        raise UserError(f"{path} holds no SFT or DPO records; pass a trl-sft or trl-dpo export")
    if strict and report.skipped:
        reasons = ", ".join(f"{k}: {n}" for k, n in report.skipped.items())
        raise UserError(f"{path} has lines that are no record ({reasons}); fix or drop them")
    return report
