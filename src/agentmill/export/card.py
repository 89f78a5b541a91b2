"""The dataset card (README.md) of an `hf` export: YAML front matter the Hub reads (`license`,
`configs` with the data files of each split, task categories, tags, size) and a Markdown body:
counts per split, sources, models, rewards, the curation stages and what they dropped, records
the exporter refused, and the run's resolved config when the export comes from a run folder.

>>> card = dataset_card(CardInput(name="demo", license="mit", splits={"train": []}))
>>> card.splitlines()[:3]
['---', 'license: mit', 'pretty_name: demo']
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentmill import __version__
from agentmill.records import Task, Trajectory

NOT_CURATION = ("source", "rollout", "export")
SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


@dataclass
class RunContext:
    """What a run folder tells about an export: its resolved config and each stage's stats."""

    config_text: str | None = None
    stage_stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, root: Path | None) -> RunContext:
        if root is None or not (root / "config.yaml").exists():
            return cls()
        stats = {}
        for path in sorted(root.glob("*/stats.json")):
            name = path.parent.name  # `<stage>.<fingerprint>` folders are moved-aside history
            if name not in NOT_CURATION and "." not in name:
                stats[name] = orjson.loads(path.read_bytes())
        return cls((root / "config.yaml").read_text(), stats)


@dataclass
class CardInput:
    name: str
    license: str = "unknown"
    splits: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # name -> rows
    trajectories: list[Trajectory] = field(default_factory=list)  # the exported ones
    tasks: dict[str, Task] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    context: RunContext = field(default_factory=RunContext)


def _size(n: int) -> str:
    return next((label for limit, label in SIZES if n < limit), "n>1M")


def _front_matter(ci: CardInput) -> str:
    names = [name for name, rows in ci.splits.items() if rows]
    files = [{"split": name, "path": f"data/{name}-*"} for name in names]
    meta: dict[str, Any] = {"license": ci.license, "pretty_name": ci.name}
    meta["task_categories"] = ["text-generation"]
    meta["tags"] = ["agentmill", "synthetic", "agent-trajectories", "tool-use", "trl"]
    meta["size_categories"] = [_size(sum(len(rows) for rows in ci.splits.values()))]
    meta["configs"] = [{"config_name": "default", "data_files": files}]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n"


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    if not rows:
        return "none recorded\n"
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _counts(ci: CardInput) -> str:
    rows = [(n, len(r), len({x["task_id"] for x in r})) for n, r in ci.splits.items() if r]
    return _table(("split", "records", "tasks"), rows)


def _source(t: Trajectory, tasks: dict[str, Task]) -> str:
    task = tasks.get(t.task_id)
    prov = task.provenance if task is not None else t.provenance
    return f"{prov.source}: {prov.file}" if prov.file else prov.source


def _rewards(trajectories: list[Trajectory]) -> str:
    values: dict[str, list[float]] = {}
    for t in trajectories:
        for name, v in t.rewards.items():
            values.setdefault(name, []).append(v)
    rows = [(n, len(v), f"{sum(v) / len(v):.3f}") for n, v in sorted(values.items())]
    return _table(("reward", "scored", "mean"), rows)


def _curation(ctx: RunContext) -> str:
    rows = [(name, f"`{orjson.dumps(s).decode()}`") for name, s in ctx.stage_stats.items()]
    return _table(("stage", "stats"), rows)


def dataset_card(ci: CardInput) -> str:
    """The README.md text."""
    sources = Counter(_source(t, ci.tasks) for t in ci.trajectories)
    models = Counter(t.model or "unknown" for t in ci.trajectories)
    config = f"```yaml\n{ci.context.config_text}```\n" if ci.context.config_text else "none\n"
    body = [
        f"# {ci.name}\n",
        f"Agent trajectories exported by agentmill {__version__} (`hf` format): TRL "
        "conversational records (`messages`, `tools`) with ids, rewards and provenance. Load "
        'with `datasets.load_dataset("<this folder>")`.\n',
        "## Counts\n",
        _counts(ci),
        "## Sources\n",
        _table(("source", "records"), sorted(sources.items())),
        "## Models\n",
        _table(("model", "records"), sorted(models.items())),
        "## Rewards\n",
        _rewards(ci.trajectories),
        "## Stages after the rollout (rewards, filters, curation: what each kept)\n",
        _curation(ci.context),
        "## Refused by the exporter\n",
        _table(("reason", "records"), sorted(ci.skipped.items())),
        "## Resolved run config\n",
        config,
    ]
    return _front_matter(ci) + "\n" + "\n".join(body)
