"""The `search` and `open` tools: BM25 (bm25s) over a local corpus, and reading one document.

A corpus is one of:

- a folder of `.txt`/`.md` files: id = the path relative to the folder without its suffix
  (`guides/setup`), title = the first non-empty line (leading `#` removed), text = the rest;
- a JSONL file with `id`, `title` (optional: the text's first line) and `text` (or `contents`
  or `body`) on each line;
- nothing (`corpus: null`): the bundled corpus of short articles, `agentmill/data/corpus`.

The index is built once per corpus and process (keyed by the resolved path and its newest
modification time), so many rollouts share it. Tokens are lowercased words minus English
stopwords, with plurals folded (`rivers` finds `river`).

    >>> corpus = Corpus([Document("a", "Rivers", "The Tamsin river floods each spring."),
    ...                  Document("b", "Bridges", "The Old Bridge crosses the canal.")])
    >>> [doc.id for doc, _ in corpus.search("river floods", 5)]
    ['a']
    >>> make_snippet("one two three four five six", {"four"}, 16)
    '… three four five …'
"""

from __future__ import annotations

import difflib
import functools
import importlib.resources
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.rollout.configs import SearchToolConfig
from agentmill.rollout.tools import ToolError

_WORD = re.compile(r"\w+")
_CACHE: dict[tuple[Path, int], Corpus] = {}
_TEXT_FIELDS = ("text", "contents", "body")
_SUFFIXES = (".txt", ".md")


@dataclass(frozen=True)
class Document:
    """One searchable document; `id` is what `open` takes."""

    id: str
    title: str
    text: str


class Corpus:
    """Documents with a BM25 index over their titles and texts."""

    def __init__(self, docs: list[Document]) -> None:
        import bm25s  # heavy: imported only when a search tool is configured

        if not docs:
            raise UserError("the search corpus has no documents; add .txt/.md files or lines")
        self.docs = docs
        self.by_id = {doc.id: doc for doc in docs}
        # models pass titles and miscased ids too; real ids win over titles
        self._loose = {d.title.casefold(): d for d in docs} | {d.id.casefold(): d for d in docs}
        self.index = bm25s.BM25()
        corpus_tokens = [tokenize(f"{doc.title}\n{doc.text}") for doc in docs]
        self.index.index(corpus_tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[Document, float]]:
        """The best `k` documents sharing at least one term with `query`, best first."""
        import numpy

        terms = [t for t in tokenize(query) if t in self.index.vocab_dict]
        if not terms:
            return []
        scores = self.index.get_scores(terms)
        ranked = numpy.argsort(-scores, kind="stable")[:k]
        return [(self.docs[i], float(scores[i])) for i in ranked if scores[i] > 0]

    def find(self, key: str) -> Document | None:
        """By id, then id without brackets/quotes or case, then by title (models use both)."""
        key = key.strip().strip("[]'\"` ").strip()
        return self.by_id.get(key) or self._loose.get(key.casefold())

    def close_ids(self, key: str, n: int = 5) -> list[str]:
        """Ids that look like `key`, for the error when it names no document."""
        return difflib.get_close_matches(key, list(self.by_id), n=n, cutoff=0.4)


class SearchTool:
    """`search(query, top_k?)`: ranked `[id] title — snippet` lines."""

    def __init__(self, cfg: SearchToolConfig, corpus: Corpus) -> None:
        self.name, self.cfg, self.corpus = cfg.name, cfg, corpus

    def schema(self) -> dict[str, Any]:
        query = {"type": "string", "description": "keywords to look for"}
        top_k = {"type": "integer", "minimum": 1, "maximum": 50}
        top_k["description"] = f"how many results (default {self.cfg.top_k})"
        description = (
            f"Search the document collection; returns `[id] title — snippet` lines. "
            f"Read a whole document with `{self.cfg.open_name}`."
        )
        return _schema(self.name, description, {"query": query, "top_k": top_k}, ["query"])

    async def call(self, arguments: dict[str, Any]) -> str:
        query = arguments.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ToolError("`query` must be a non-empty string of keywords")
        top_k = arguments.get("top_k", self.cfg.top_k)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
            raise ToolError("`top_k` must be a whole number from 1 to 50")
        hits = self.corpus.search(query, top_k)
        if not hits:
            raise ToolError(f"no document matches {query!r}; try other or fewer words")
        terms = set(tokenize(query))
        lines = [
            f"[{doc.id}] {doc.title} — {make_snippet(doc.text, terms, self.cfg.snippet_chars)}"
            for doc, _ in hits
        ]
        return "\n".join(lines)


class OpenTool:
    """`open(id)`: one document's text, cut at `max_open_chars` with a note."""

    def __init__(self, cfg: SearchToolConfig, corpus: Corpus) -> None:
        self.name, self.cfg, self.corpus = cfg.open_name, cfg, corpus

    def schema(self) -> dict[str, Any]:
        doc_id = {"type": "string", "description": "a document id from the search results"}
        description = f"Read a document found with `{self.cfg.name}`, by its id."
        return _schema(self.name, description, {"id": doc_id}, ["id"])

    async def call(self, arguments: dict[str, Any]) -> str:
        key = arguments.get("id")
        if not isinstance(key, str) or not key.strip():
            raise ToolError("`id` must be a document id such as the ones search shows in [ ]")
        doc = self.corpus.find(key)
        if doc is None:
            close = self.corpus.close_ids(key.strip())
            hint = f"; close ids: {', '.join(close)}" if close else "; search first to get ids"
            raise ToolError(f"no document with id {key!r}{hint}")
        limit, text = self.cfg.max_open_chars, doc.text
        if len(text) > limit:
            text = f"{text[:limit]}\n[truncated: showing {limit} of {len(text)} characters]"
        return f"[{doc.id}] {doc.title}\n\n{text}"


def build(cfg: SearchToolConfig) -> list[SearchTool | OpenTool]:
    """Both tools over one corpus, loaded (and indexed) now so a bad corpus fails at startup."""
    corpus = load_corpus(cfg.corpus)
    return [SearchTool(cfg, corpus), OpenTool(cfg, corpus)]


def bundled_corpus() -> Path:
    """The JSONL corpus shipped with agentmill."""
    return Path(str(importlib.resources.files("agentmill") / "data" / "corpus" / "corpus.jsonl"))


def load_corpus(path: Path | None) -> Corpus:
    """The indexed corpus at `path` (None: the bundled one), built once per content version."""
    path = (path or bundled_corpus()).expanduser().resolve()
    if not path.exists():
        raise UserError(f"search corpus {path} does not exist; set `corpus` to a folder or JSONL")
    key = (path, _newest_mtime(path))
    if key not in _CACHE:
        for old in [k for k in _CACHE if k[0] == path]:
            del _CACHE[old]  # the corpus changed on disk: drop the stale index
        _CACHE[key] = Corpus(_read_folder(path) if path.is_dir() else _read_jsonl(path))
    return _CACHE[key]


def _newest_mtime(path: Path) -> int:
    if not path.is_dir():
        return path.stat().st_mtime_ns
    stamps = [p.stat().st_mtime_ns for p in path.rglob("*") if p.suffix in _SUFFIXES or p.is_dir()]
    return max([path.stat().st_mtime_ns, *stamps])


def _read_folder(folder: Path) -> list[Document]:
    docs = []
    for file in sorted(p for p in folder.rglob("*") if p.suffix in _SUFFIXES and p.is_file()):
        lines = file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        title = lines[0].lstrip("#").strip() if lines else file.stem
        body = "\n".join(lines[1:]).strip() or title
        docs.append(Document(file.relative_to(folder).with_suffix("").as_posix(), title, body))
    return docs


def _read_jsonl(path: Path) -> list[Document]:
    docs, seen = [], set()
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                doc = _document(line, f"{path}:{number}")
                if doc.id in seen:
                    raise UserError(f"{path}:{number}: duplicate id {doc.id!r}; ids must be unique")
                seen.add(doc.id)
                docs.append(doc)
    return docs


def _document(line: bytes, where: str) -> Document:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise UserError(f"{where}: not valid JSON ({exc}); fix the line") from None
    text = next((record[f] for f in _TEXT_FIELDS if isinstance(record, dict) and f in record), None)
    if not isinstance(text, str) or record.get("id") in (None, ""):
        raise UserError(f"{where}: a corpus line needs `id` and `text` (or `contents`/`body`)")
    title = record.get("title") or text.strip().split("\n", 1)[0][:80]
    return Document(str(record["id"]), str(title), text)


def tokenize(text: str) -> list[str]:
    """Lowercased words without stopwords, plurals folded.

    >>> tokenize("The rivers of Vell and its 3 bridges")
    ['river', 'vell', '3', 'bridge']
    """
    stop = _stopwords()
    words = _WORD.findall(text.lower())
    return [stem(w) for w in words if w not in stop and (len(w) > 1 or w.isdigit())]


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return frozenset(STOPWORDS_EN_PLUS)


def stem(word: str) -> str:
    """Fold English plurals (Harman's S-stemmer): `cities` -> `city`, `boxes` -> `boxe`."""
    if len(word) <= 3 or not word.endswith("s"):
        return word
    if word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if word.endswith(("us", "ss")):
        return word
    return word[:-1]


def make_snippet(text: str, terms: set[str], width: int) -> str:
    """About `width` characters of `text` around the densest run of query `terms`."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    start = _best_window(flat, terms, width)
    start = flat.rfind(" ", 0, start + 1) + 1  # begin and end on whole words
    end = min(len(flat), start + width)
    if end < len(flat) and flat.rfind(" ", start, end) > start:
        end = flat.rfind(" ", start, end)
    return ("… " if start > 0 else "") + flat[start:end] + (" …" if end < len(flat) else "")


def _best_window(flat: str, terms: set[str], width: int) -> int:
    """Start of the window holding the most distinct terms (ties: the earliest)."""
    hits = [(m.start(), stem(m.group().lower())) for m in _WORD.finditer(flat)]
    hits = [(pos, term) for pos, term in hits if term in terms]
    best, best_count, counts, right = 0, 0, Counter[str](), 0
    for left, (pos, _) in enumerate(hits):
        while right < len(hits) and hits[right][0] < pos + width * 3 // 4:
            counts[hits[right][1]] += 1
            right += 1
        if len(counts) > best_count:
            best, best_count = max(0, pos - width // 4), len(counts)
        counts[hits[left][1]] -= 1
        if counts[hits[left][1]] == 0:
            del counts[hits[left][1]]
    return best


def _schema(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }
