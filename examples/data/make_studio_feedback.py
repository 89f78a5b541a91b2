"""Regenerate examples/data/studio_feedback.sqlite, the AgentScope Studio file that
examples/astuner_feedback.yaml reads: three runs of a shoe-shop support agent (agentscope
1.0.9+ GenAI spans, Studio >= 1.0.7 layout), written by tests/studio_db.py the way Studio's
span processor fills the file.

    .venv/bin/python examples/data/make_studio_feedback.py
"""

from __future__ import annotations

import sqlite3
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))

from studio_db import Call, RunScript, Step, Turn, build_db  # noqa: E402

SYSTEM = "You are the support agent of a shoe shop. Use the tools to answer."
LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look up an order by its id.",
        "parameters": {
            "type": "object",
            "properties": {"order_id": {"type": "string"}},
            "required": ["order_id"],
        },
    },
}


def runs() -> list[RunScript]:
    """The scripted conversations (one run each, in time order)."""
    order = Turn(
        user="Where is my order A-1042?",
        steps=[
            Step("", [Call("lookup_order", {"order_id": "A-1042"}, '{"status": "shipped"}')]),
            Step("Order A-1042 has shipped with DHL and arrives on 14 March.", usage=(240, 18)),
        ],
    )
    canada = Turn(
        user="Do you ship to Canada?",
        steps=[Step("Yes, we ship to Canada. Delivery takes 5 to 8 business days.")],
    )
    germany = Turn(
        user="And to Germany?",
        steps=[Step("Yes, delivery to Germany takes 2 to 4 business days.", usage=(300, 16))],
    )
    excuse = Turn(
        user="How do I return shoes that do not fit?",
        steps=[Step("I tried to look up the return policy but the tool timed out.")],
    )
    start = datetime(2026, 3, 2, 9, 0, 0, tzinfo=UTC)
    common = {"project": "shop", "name": "support", "system": SYSTEM, "tools": [LOOKUP]}
    return [
        RunScript("run-order", [order], start=start, **common),
        RunScript("run-ship", [canada, germany], start=start.replace(hour=10), **common),
        RunScript("run-return", [excuse], start=start.replace(hour=11), **common),
    ]


def main(path: Path = HERE / "studio_feedback.sqlite") -> Path:
    return write(path, runs())


def write(path: Path, scripts: list[RunScript]) -> Path:
    """The runs as a new-layout Studio file of GenAI spans, compacted (it is committed)."""
    path.unlink(missing_ok=True)
    build_db(path, scripts, layout="new", protocol="genai")
    db = sqlite3.connect(path)  # small pages: the file is committed (readers do not care)
    db.execute("PRAGMA page_size=512")
    db.execute("VACUUM")
    db.close()
    return path


if __name__ == "__main__":
    print(main())
