"""The decontamination stage: drop records whose user text shares a long word n-gram with an
evaluation set.

The eval n-grams (of normalized text, see `dedup.normalize`) are hashed once to 8-byte blake2b
integers, each mapped to the index of the first eval file it came from. A hit's reason names that
eval set: `contaminated:<name>` (the file name unless the config names it); `match` also gives
the shared n-gram.

>>> import tempfile, pathlib
>>> from agentmill.records import Message, Trajectory
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "gsm.txt").write_text("how many apples does tom have left\\n")
>>> index = EvalIndex.build(DecontamConfig(eval_files=[str(d / "gsm.txt")], ngram=5))
>>> t = Trajectory(id="a", task_id="t",
...                messages=[Message(role="user", content="Q: How many apples does Tom have?")])
>>> index.reason(t)
'contaminated:gsm.txt'
>>> index.match_record(t)
('gsm.txt', 'how many apples does tom')
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from agentmill.curation.dedup import normalize, trajectory_query
from agentmill.curation.dedup_config import DecontamConfig
from agentmill.errors import UserError
from agentmill.records import Trajectory

AUTO_FIELDS = ("question", "prompt", "problem", "query", "input", "text")


def ngram_hash(words: list[str]) -> int:
    """8-byte blake2b of the words joined by one space.

    >>> ngram_hash(["a", "b"]) == ngram_hash("a b".split())
    True
    """
    return int.from_bytes(hashlib.blake2b(" ".join(words).encode(), digest_size=8).digest())


def _item_text(row: dict[str, Any], name: str | None) -> str:
    if name is not None:
        value = row.get(name)
    else:
        value = next((row[f] for f in AUTO_FIELDS if isinstance(row.get(f), str)), None)
    return value if isinstance(value, str) else ""


def read_eval_items(path: str | Path, name: str | None = None) -> list[str]:
    """The items of one eval file: JSONL/JSON lines or parquet (`name` or an auto-detected
    question/prompt/problem field), else plain text with one item per line.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "e.jsonl"
    >>> _ = p.write_text('{"problem": "one two"}\\n\\n{"id": 3}\\n')
    >>> read_eval_items(p)
    ['one two']
    """
    path = Path(path)
    if path.suffix in (".jsonl", ".json"):
        lines = path.read_bytes().splitlines()
        rows = [orjson.loads(line) for line in lines if line.strip()]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        return [line for line in path.read_text().splitlines() if line.strip()]
    texts = [_item_text(r, name) if isinstance(r, dict) else "" for r in rows]
    return [t for t in texts if t.strip()]


def _read_checked(path: str, name: str | None) -> list[str]:
    """`read_eval_items`, with an unreadable or empty eval file turned into one line."""
    try:
        items = read_eval_items(path, name)
    except (OSError, ValueError, UnicodeDecodeError) as e:  # ArrowInvalid is a ValueError
        raise UserError(
            f"eval file {path} cannot be read ({type(e).__name__}: {e}); fix or replace it"
        ) from None
    if not items:
        wanted = name or "/".join(AUTO_FIELDS)
        raise UserError(
            f"eval file {path} has no items (no text in field {wanted}); "
            "name the field that holds the questions (decontaminate.field, --field)"
        )
    return items


@dataclass
class EvalIndex:
    """Hashed eval n-grams -> file index; whole short items by word count."""

    cfg: DecontamConfig
    files: list[str] = field(default_factory=list)
    items: list[int] = field(default_factory=list)
    grams: dict[int, int] = field(default_factory=dict)
    short_lengths: set[int] = field(default_factory=set)

    @classmethod
    def build(cls, cfg: DecontamConfig) -> EvalIndex:
        """Read every eval file once and index its n-grams; a bad or empty file is a UserError."""
        index = cls(cfg=cfg)
        for pos, (path, name) in enumerate(cfg.sets()):
            items = _read_checked(path, cfg.field)
            index.files.append(name)
            index.items.append(len(items))
            for item in items:
                index.add(normalize(item).split(), pos)
        return index

    def add(self, words: list[str], pos: int) -> None:
        """Index one eval item's words under file index `pos`."""
        n = self.cfg.ngram
        if len(words) < n:
            if len(words) >= self.cfg.min_words:
                self.short_lengths.add(len(words))
                self.grams.setdefault(ngram_hash(words), pos)
            return
        for i in range(len(words) - n + 1):
            self.grams.setdefault(ngram_hash(words[i : i + n]), pos)

    def match(self, text: str) -> tuple[str, str] | None:
        """(eval set name, the shared n-gram, normalized) for `text`, or None."""
        words = normalize(text).split()
        for n in sorted({self.cfg.ngram, *self.short_lengths}, reverse=True):
            for i in range(len(words) - n + 1):
                pos = self.grams.get(ngram_hash(words[i : i + n]))
                if pos is not None:
                    return self.files[pos], " ".join(words[i : i + n])
        return None

    def hit(self, text: str) -> str | None:
        """The name of the eval set that `text` shares an n-gram with, or None."""
        found = self.match(text)
        return None if found is None else found[0]

    def match_record(self, t: Trajectory) -> tuple[str, str] | None:
        """(eval set, n-gram) of the first hit in `t`'s query (or any user turn), or None."""
        if self.cfg.scope == "query":
            texts = [trajectory_query(t)]
        else:
            texts = [m.text for m in t.messages if m.role == "user"]
        for text in texts:
            found = self.match(text)
            if found is not None:
                return found
        return None

    def reason(self, t: Trajectory) -> str | None:
        """`contaminated:<eval set>` when `t`'s query (or any user turn) hits, else None."""
        found = self.match_record(t)
        return None if found is None else f"contaminated:{found[0]}"


def decontaminate(
    records: list[Trajectory], cfg: DecontamConfig
) -> tuple[list[Trajectory], list[tuple[Trajectory, str]]]:
    """(kept, dropped with reason) against the eval files of `cfg`.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "qa.txt"
    >>> _ = f.write_text("one two three four five six seven eight nine\\n")
    >>> decontaminate([], DecontamConfig(eval_files=[str(f)]))
    ([], [])
    """
    index = EvalIndex.build(cfg)
    kept: list[Trajectory] = []
    dropped: list[tuple[Trajectory, str]] = []
    for t in records:
        why = index.reason(t)
        if why is None:
            kept.append(t)
        else:
            dropped.append((t, why))
    return kept, dropped
