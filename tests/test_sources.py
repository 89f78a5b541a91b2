from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from agentmill.config import FieldMap, FileSourceConfig
from agentmill.errors import UserError
from agentmill.records import Task
from agentmill.sources import Bad, iter_source

ROWS = [
    {"q": "What is 1+1?", "a": "2", "topic": "add"},
    {"q": "What is 3*3?", "a": "9", "topic": "mul"},
]


def _tasks(cfg: FileSourceConfig) -> list[Task | Bad]:
    return list(iter_source(cfg))


def _check(items: list[Task | Bad]) -> None:
    assert [t.query for t in items] == ["What is 1+1?", "What is 3*3?"]
    assert [t.ground_truth for t in items] == ["2", "9"]
    assert items[0].metadata == {"topic": "add"}


FM = FieldMap(prompt="q", ground_truth="a")


def test_jsonl_parquet_json_array_and_hf_folder_give_the_same_tasks(tmp_path: Path) -> None:
    import datasets

    jl = tmp_path / "t.jsonl"
    jl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in ROWS))
    arr = tmp_path / "t.json"
    arr.write_bytes(orjson.dumps(ROWS))
    pqf = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), pqf)
    hf = tmp_path / "hf"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])}
    ).save_to_disk(str(hf))
    results = [_tasks(FileSourceConfig(path=p, field_map=FM)) for p in (jl, arr, pqf, hf)]
    for items in results:
        _check(items)
    assert len({tuple(t.id for t in items) for items in results}) == 1  # same content, same ids
    assert len(_tasks(FileSourceConfig(path=hf, field_map=FM, split="test"))) == 1


def test_messages_tools_system_and_autodetect(tmp_path: Path) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
            ],
            "tools": '[{"name": "f", "parameters": {"type": "object"}}]',
            "id": 7,
        },
        {"question": "2+2?", "answer": 4, "system": "be brief"},
    ]
    p = tmp_path / "t.jsonl"
    p.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    a, b = _tasks(FileSourceConfig(path=p, system_prompt="default system"))
    assert [m.role for m in a.prompt] == ["system", "user"] and a.prompt[
        0
    ].content == "default system"
    assert a.ground_truth == "hello" and a.tools[0]["function"]["name"] == "f"
    assert a.provenance.source_id == "7"
    assert b.prompt[0].content == "be brief" and b.ground_truth == 4


def test_bad_rows_become_bad_items_with_reasons(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text(
        '{"prompt": "ok"}\n{oops\n"str"\n{"text": "x"}\n'
        '{"messages": [{"role": "robot", "content": "x"}]}\n{"prompt": "ok2"}\n'
    )
    items = _tasks(FileSourceConfig(path=p))
    assert [getattr(i, "reason", "task") for i in items] == [
        "task",
        "invalid_json",
        "not_an_object",
        "missing_field",
        "bad_field",
        "task",
    ]
    assert items[1].key == f"{p}:2"


def test_limit_and_missing_or_unreadable_files(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(5)))
    assert len(_tasks(FileSourceConfig(path=p, limit=3))) == 3
    with pytest.raises(UserError, match="task file not found"):
        _tasks(FileSourceConfig(path=tmp_path / "nope.jsonl"))
    bad = tmp_path / "x.parquet"
    bad.write_text("not parquet")
    with pytest.raises(UserError, match="not a readable parquet file"):
        _tasks(FileSourceConfig(path=bad))
