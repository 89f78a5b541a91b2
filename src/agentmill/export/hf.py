"""The `hf` export: a dataset folder `datasets.load_dataset(folder)` loads, with a dataset card.

Layout::

    <folder>/README.md                              card: YAML front matter + counts, sources...
    <folder>/data/train-00000-of-00001.parquet      parquet shards, one set per split
    <folder>/data/validation-00000-of-00001.parquet (with the split option)
    <folder>/dataset_dict.json, train/, validation/ (save_to_disk: the Arrow copy)

`datasets.load_dataset(folder)` reads the parquet shards through the card's `configs`
(this is also the layout the Hub serves); `datasets.load_from_disk(folder)` reads only the
Arrow copy that `save_to_disk=True` adds (it cannot read parquet).

Rows are TRL conversational records plus what the run knows about them: `id`, `task_id`,
`messages`, `tools`, `sample_index`, `rewards` (a struct of every reward name in the export,
None where a trajectory lacks one; no column when nothing was scored), `final_reward`,
`model`, `source`. `messages` and `tools` use the datasets `Json()` feature: Arrow would
otherwise merge the argument dicts of different tools into one struct and fill missing keys
with nulls. Caveat (datasets 5.2): `Json()` values are decoded with pandas' ujson, which
parses some floats one ulp off (0.3 reads back as 0.30000000000000004); `float_drift_rows`
counts the rows that hold such a float. The values are written as orjson text first: datasets'
own `Json()` encoder keeps only 10 significant digits of a float.

>>> from agentmill.records import Message, Trajectory
>>> t = Trajectory(id="a", task_id="t", rewards={"math": 1.0}, messages=[
...     Message(role="user", content="2+2?"), Message(role="assistant", content="4")])
>>> row = to_hf_row(t)
>>> row["messages"][1], row["rewards"], row["final_reward"]
({'role': 'assistant', 'content': '4'}, {'math': 1.0}, 1.0)
"""

from __future__ import annotations

import contextlib
import math
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from agentmill.errors import UserError
from agentmill.export.trajectory import final_reward
from agentmill.export.trl_sft import to_trl_sft
from agentmill.records import Trajectory

SHARD_ROWS = 20_000
OWN_ENTRIES = {"README.md", "data", "dataset_dict.json", "train", "validation"}


def to_hf_row(t: Trajectory, include_reasoning: bool = False, reward: str | None = None) -> dict:
    """One row; raises `ExportError` when the trajectory cannot be a TRL record."""
    row = to_trl_sft(t, t.tools, include_reasoning)
    row.update(sample_index=t.sample_index, rewards=dict(t.rewards))
    row.update(final_reward=final_reward(t, reward), model=t.model, source=t.provenance.source)
    return row


def with_all_rewards(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose `rewards` hold every reward name of the export (None where absent), so that
    Arrow stores them as one struct and the loaded rows equal these; no column without any."""
    names = sorted({name for row in rows for name in row["rewards"]})
    if not names:
        return [{k: v for k, v in row.items() if k != "rewards"} for row in rows]
    return [{**row, "rewards": {n: row["rewards"].get(n) for n in names}} for row in rows]


def hf_features(rows: list[dict[str, Any]]) -> Any:
    """The datasets `Features` of the rows (nested messages and tools as `Json()`)."""
    from datasets import Features, Json, List, Value

    columns: dict[str, Any] = {"id": Value("string"), "task_id": Value("string")}
    columns.update(messages=List(Json()), tools=List(Json()), sample_index=Value("int64"))
    if rows and "rewards" in rows[0]:
        columns["rewards"] = {name: Value("float64") for name in rows[0]["rewards"]}
    columns.update(final_reward=Value("float64"), model=Value("string"), source=Value("string"))
    return Features(columns)


def _json_encoded(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with the `Json()` values as JSON text: datasets would encode them with pandas'
    ujson, which keeps only 10 significant digits of a float (orjson keeps them all)."""

    def encode(items: list[Any]) -> list[str]:
        return [orjson.dumps(x).decode() for x in items]

    return [{**r, "messages": encode(r["messages"]), "tools": encode(r["tools"])} for r in rows]


def _floats(value: Any) -> Iterator[float]:
    if isinstance(value, float):
        yield value
    elif isinstance(value, dict | list):
        for v in value.values() if isinstance(value, dict) else value:
            yield from _floats(v)


def float_drift_rows(rows: list[dict[str, Any]]) -> int:
    """Rows whose `messages` / `tools` hold a float that datasets' Json decoding changes."""
    from datasets.utils.json import ujson_loads

    def drifts(x: float) -> bool:
        return math.isfinite(x) and ujson_loads(repr(x)) != x

    return sum(any(drifts(x) for x in _floats([r["messages"], r["tools"]])) for r in rows)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    from datasets import utils

    was_disabled = utils.are_progress_bars_disabled()
    utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            utils.enable_progress_bars()


def _write_shards(ds: Any, folder: Path, split: str, shard_rows: int) -> dict[Path, int]:
    import pyarrow.parquet as pq

    table = ds.data.table  # carries the features (Json included) in its schema metadata
    n = max(1, math.ceil(len(ds) / shard_rows))
    written = {}
    for i in range(n):
        path = folder / f"{split}-{i:05d}-of-{n:05d}.parquet"
        part = table.slice(i * shard_rows, shard_rows)
        pq.write_table(part, path)
        written[path] = part.num_rows
    return written


def _check_target(folder: Path) -> None:
    if not folder.exists():
        return
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in OWN_ENTRIES)
    else:
        foreign = [folder.name]
    if foreign:
        raise UserError(
            f"{folder} exists and is not an agentmill hf export (it holds {', '.join(foreign)}); "
            "choose another output path or move it away"
        )


def _swap_in(tmp: Path, folder: Path) -> None:
    """Replace `folder` (a previous export) with `tmp`, never leaving a half-written folder."""
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def write_hf(
    splits: dict[str, list[dict[str, Any]]],
    folder: Path,
    card: str,
    *,
    save_to_disk: bool = False,
    shard_rows: int | None = None,
) -> dict[Path, int]:
    """Write the non-empty `splits` (name -> rows) and the card; the parquet files written
    and their row counts. A previous export in `folder` is replaced as a whole."""
    import datasets

    _check_target(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    written: dict[Path, int] = {}
    built = {}
    for name, rows in splits.items():
        if rows:
            built[name] = datasets.Dataset.from_list(
                _json_encoded(rows), features=hf_features(rows)
            )
            shards = _write_shards(built[name], tmp / "data", name, shard_rows or SHARD_ROWS)
            written.update(shards)
    if save_to_disk and built:
        with _quiet():
            datasets.DatasetDict(built).save_to_disk(str(tmp))
    (tmp / "README.md").write_text(card)
    _swap_in(tmp, folder)
    return {folder / p.relative_to(tmp): n for p, n in written.items()}
