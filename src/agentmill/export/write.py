"""Write one export: build its records, split them by task, write the files of the format.

Both the run's export stage and `agentmill export` call `write_export`. With `split`, every
record goes to the side of its task (the task's own `split`, else a hash of the task id), so
all samples of a task land on the same side: `<stem>.train<ext>` and `<stem>.validation<ext>`
(hf: the folder's `train` / `validation` splits); a side without records is not written.
Beside the data: sharegpt entries in `dataset_info.json` (merged into an existing one), the
verl tool config `<stem>.tools.yaml`, the hf dataset card.

>>> import tempfile
>>> from agentmill.export.configs import ExportConfig
>>> from agentmill.records import Message, Trajectory
>>> t = Trajectory(id="a", task_id="t", messages=[
...     Message(role="user", content="2+2?"), Message(role="assistant", content="4")])
>>> out = Path(tempfile.mkdtemp()) / "sft.jsonl"
>>> result = write_export(ExportConfig(format="trl-sft"), [t], {}, out)
>>> {p.name: n for p, n in result.written.items()}
{'sft.jsonl': 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentmill.errors import UserError
from agentmill.export import export_records
from agentmill.export.configs import ExportConfig
from agentmill.export.splits import side_path, task_side
from agentmill.records import Task, Trajectory
from agentmill.store import write_atomic

Rows = list[dict[str, Any]]
Sides = dict[str | None, Rows]  # None: no split, one file


@dataclass
class ExportResult:
    written: dict[Path, int] = field(default_factory=dict)  # file -> records
    skipped: Counter[str] = field(default_factory=Counter)  # refused records, by reason
    notes: list[str] = field(default_factory=list)  # caveats found in the written data


@dataclass
class _Job:
    cfg: ExportConfig
    out: Path
    sides: Sides
    trajectories: list[Trajectory]
    tasks: dict[str, Task]
    run_root: Path | None
    result: ExportResult


def _task_id(row: dict[str, Any]) -> str:
    return str(row["task_id"] if "task_id" in row else row["extra_info"]["task_id"])


def split_rows(rows: Rows, tasks: dict[str, Task], val_fraction: float) -> dict[str, Rows]:
    """{"train": rows, "validation": rows}, each row on the side of its task."""
    sides: dict[str, Rows] = {"train": [], "validation": []}
    for row in rows:
        task_id = _task_id(row)
        sides[task_side(task_id, tasks.get(task_id), val_fraction)].append(row)
    return sides


def _targets(job: _Job) -> list[tuple[Path, Rows]]:
    """(file, rows) per side; with the split option, only the sides that have rows."""
    if None in job.sides:
        return [(job.out, job.sides[None])]
    return [(side_path(job.out, str(s)), rows) for s, rows in job.sides.items() if rows]


def _write_jsonl(job: _Job) -> None:
    for path, rows in _targets(job):
        write_atomic(path, b"".join(orjson.dumps(r) + b"\n" for r in rows))
        job.result.written[path] = len(rows)


def _write_sharegpt(job: _Job) -> None:
    from agentmill.export.sharegpt import dataset_info_entry

    _write_jsonl(job)
    ranking = job.cfg.format == "sharegpt-ranking"
    entries = {p.stem: dataset_info_entry(p.name, ranking) for p in job.result.written}
    path = job.out.with_name("dataset_info.json")
    info: dict[str, Any] = {}
    if path.exists():
        try:
            info = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            raise UserError(
                f"{path} is not valid JSON; fix or remove it, then export again"
            ) from None
    info.update(entries)
    write_atomic(path, orjson.dumps(info, option=orjson.OPT_INDENT_2))


def _write_parquets(job: _Job) -> list[tuple[Path, Rows]]:
    from agentmill.export.verl import write_parquet

    done = []
    for path, rows in _targets(job):
        if not rows:
            job.result.notes.append(f"{path.name}: no records, not written")
            continue
        job.result.written[write_parquet(rows, path)] = len(rows)
        done.append((path, rows))
    return done


def _write_verl(job: _Job) -> None:
    from agentmill.export import tasks_with_tools
    from agentmill.export.verl import write_tool_config

    tasks = tasks_with_tools(list(job.tasks.values()), job.trajectories)
    write_tool_config(tasks, job.out, job.cfg.tool_class)
    _write_parquets(job)


def _write_verl_sft(job: _Job) -> None:
    from agentmill.export.verl import null_filled_rows

    for path, rows in _write_parquets(job):
        n = null_filled_rows(rows, path)
        if n:
            job.result.notes.append(
                f"{path.name}: {n} rows read back with null keys Arrow added to their tools "
                "(tools with different keys in one file; see docs/formats.md, verl-sft)"
            )


def _card_name(job: _Job, config_text: str | None) -> str:
    config = yaml.safe_load(config_text) if config_text else None
    name = config.get("name") if isinstance(config, dict) else None
    return str(name) if name else job.out.name


def _write_hf(job: _Job) -> None:
    from agentmill.export.card import CardInput, RunContext, dataset_card
    from agentmill.export.hf import float_drift_rows, write_hf

    splits = {str(s or "train"): rows for s, rows in job.sides.items()}
    ids = {row["id"] for rows in splits.values() for row in rows}
    if not ids:
        job.result.notes.append(f"{job.out.name}: no records; the folder has only its card")
    ctx = RunContext.of(job.run_root)
    card = CardInput(_card_name(job, ctx.config_text), job.cfg.license, splits, context=ctx)
    card.trajectories = [t for t in job.trajectories if t.id in ids]
    card.tasks, card.skipped = job.tasks, job.result.skipped
    written = write_hf(splits, job.out, dataset_card(card), save_to_disk=job.cfg.save_to_disk)
    job.result.written.update(written)
    drift = float_drift_rows([row for rows in splits.values() for row in rows])
    if drift:
        job.result.notes.append(
            f"{job.out.name}: {drift} rows hold a float that datasets' Json() decoding reads "
            "back one ulp off (see docs/formats.md, hf)"
        )


WRITERS: dict[str, Callable[[_Job], None]] = {
    "sharegpt": _write_sharegpt,
    "sharegpt-ranking": _write_sharegpt,
    "verl": _write_verl,
    "verl-sft": _write_verl_sft,
    "hf": _write_hf,
}


def write_export(
    cfg: ExportConfig,
    trajectories: list[Trajectory],
    tasks: dict[str, Task],
    out: Path,
    run_root: Path | None = None,
) -> ExportResult:
    """Build, split and write one export to `out` (a file, or the hf folder). `tasks` give
    verl / trl-grpo their rows and every format its split; `run_root` the hf card's context."""
    from agentmill.export.hf import with_all_rewards

    rows, skipped = export_records(cfg, trajectories, tasks)
    if cfg.format == "hf":
        rows = with_all_rewards(rows)
    sides: Sides = dict(split_rows(rows, tasks, cfg.val_fraction)) if cfg.split else {None: rows}
    result = ExportResult(skipped=skipped)
    out.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(cfg, out, sides, trajectories, tasks, run_root, result)
    WRITERS.get(cfg.format, _write_jsonl)(job)
    return result
