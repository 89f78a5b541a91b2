"""The response cache: SQLite, keyed by a hash of everything that defines a model call.

The key covers the backend's output-relevant config (model, extra request fields), the
messages, the tools, the sampling parameters, the run seed and the sample index, so the
k-th sample of a task maps to the same cached answer on a re-run, and `--no-cache` or a
new run `seed` gives fresh samples on purpose. Only successful completions are stored.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

from agentmill.backends.base import Completion
from agentmill.errors import UserError
from agentmill.records import content_hash

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    value BLOB NOT NULL
)
"""


def cache_key(
    backend_fp: str,
    messages: list[dict[str, Any]],
    tools: Any,
    params: dict[str, Any],
    seed: int,
    sample_index: int,
) -> str:
    return content_hash(
        {"b": backend_fp, "m": messages, "t": tools, "p": params, "s": seed, "i": sample_index},
        length=32,
    )


class ResponseCache:
    """A persistent map from call key to `Completion`. Safe to share between processes."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(
                f"response cache {path} is unreadable ({e}); delete it or run with --no-cache"
            ) from None
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> Completion | None:
        row = self._db.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return Completion.model_validate(orjson.loads(row[0]))

    def put(self, key: str, backend: str, completion: Completion) -> None:
        value = orjson.dumps(completion.model_dump(mode="json", exclude={"cached"}))
        self._db.execute(
            "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
            (key, backend, completion.model or "", time.time(), value),
        )

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
