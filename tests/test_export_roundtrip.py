"""Every export written by `write_export` on a set that mixes tools with different argument
names, read back with the real readers: `datasets.load_dataset("json")`, the hf folder with
`load_dataset` / `load_from_disk`, pyarrow for verl; TRL's own chat-template helpers on the
loaded rows; splits that keep every task on one side; reward parity through the files."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from agentmill.errors import UserError
from agentmill.export import FORMATS, export_records
from agentmill.export.configs import ExportConfig
from agentmill.export.hf import float_drift_rows, with_all_rewards
from agentmill.export.sharegpt import validate_sharegpt
from agentmill.export.verl import read_verl_sft
from agentmill.export.write import split_rows, write_export
from agentmill.integrations.trl import reward_func
from agentmill.records import ExpectedCall, FunctionCall, Message, Task, ToolCall, Trajectory
from agentmill.scoring import build_reward
from agentmill.scoring.configs import ScoreConfig
from agentmill.scoring.stage import score_trajectory
from agentmill.store import iter_jsonl

datasets = pytest.importorskip("datasets")


def fn(name: str, props: dict[str, Any], required: list[str], desc: str | None = None) -> dict:
    schema: dict[str, Any] = {"name": name, "parameters": {"type": "object", "properties": props}}
    schema["parameters"]["required"] = required
    if desc:
        schema["description"] = desc
    return {"type": "function", "function": schema}


WEATHER = fn("weather", {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}}, ["city"])
CALC = fn("calc", {"expression": {"type": "string"}}, ["expression"], "Evaluate arithmetic")
SEARCH = fn("search", {"query": {"type": "string"}, "top_k": {"type": "integer"}}, ["query"])
CONVERT = fn("convert", {"amount": {"type": "number"}, "to": {"type": "string"}}, ["amount"])


def call(i: int, name: str, args: dict[str, Any] | None, raw: str | None = None) -> ToolCall:
    return ToolCall(id=f"c{i}", function=FunctionCall(name=name, arguments=args, raw_arguments=raw))


def user(text: str) -> Message:
    return Message(role="user", content=text)


def asst(text: str | None = None, calls: list[ToolCall] | None = None, **kw: Any) -> Message:
    return Message(role="assistant", content=text, tool_calls=calls, **kw)


def res(i: int, name: str, text: str) -> Message:
    return Message(role="tool", tool_call_id=f"c{i}", name=name, content=text)


T_WEATHER = Task.create("Weather in Paris and 6*7?", "42", tools=[WEATHER, CALC], system="Brief.")
T_CONVERT = Task.create("12.5 EUR in USD?", "13.75", tools=[CONVERT])
T_SEARCH = Task.create("Who wrote Dune?", "Frank Herbert", tools=[SEARCH, WEATHER])
T_VAL = Task.create("2+2?", "4", split="validation")  # the source put it in validation
T_CALLS = Task.create(
    "Weather in Rome?", None, tools=[WEATHER], expected_calls=[ExpectedCall(name="weather")]
)
TASKS = {t.id: t for t in (T_WEATHER, T_CONVERT, T_SEARCH, T_VAL, T_CALLS)}


def traj(task: Task, i: int, messages: list[Message], reward: float, **kw: Any) -> Trajectory:
    return Trajectory(
        id=f"{task.id[:6]}-{i}",
        task_id=task.id,
        sample_index=i,
        messages=[*task.prompt, *messages],
        tools=task.tools,
        rewards={"math": reward, **kw.pop("rewards", {})},
        model=kw.pop("model", "smollm2-135m"),
        **kw,
    )


PARALLEL = [
    asst(
        "Checking.", [call(0, "weather", {"city": "Paris"}), call(1, "calc", {"expression": "6*7"})]
    ),
    res(0, "weather", "sunny"),
    res(1, "calc", "42"),
    asst("Sunny; \\boxed{42}", reasoning="weather, then math"),
]
TRAJS = [
    traj(T_WEATHER, 0, PARALLEL, 1.0, rewards={"format": 1.0}),
    traj(T_WEATHER, 1, [asst("\\boxed{41}")], 0.0, rewards={"format": 0.5}),
    traj(T_WEATHER, 2, [asst(None, [call(0, "calc", None, raw="{6*")]), asst("42")], 1.0),
    traj(
        T_CONVERT,
        0,
        [
            asst(None, [call(0, "convert", {"amount": 12.5, "to": "USD"})]),
            res(0, "convert", "13.75"),
            asst("13.75"),
        ],
        1.0,
        model="teacher-b",
    ),
    traj(T_CONVERT, 1, [asst("12")], 0.0),
    traj(
        T_SEARCH,
        0,
        [
            asst(None, [call(0, "search", {"query": "Dune author", "top_k": 3})]),
            res(0, "search", "Frank Herbert wrote Dune."),
            asst("Frank Herbert"),
            user("And Paris?"),
            asst(None, [call(1, "weather", {"city": "Paris", "unit": "C"})]),
            res(1, "weather", "20"),
            asst("20 C"),
        ],
        1.0,
    ),
    traj(T_SEARCH, 1, [asst("Isaac Asimov")], 0.0),
    traj(T_VAL, 0, [asst("\\boxed{4}")], 1.0),
    traj(T_VAL, 1, [asst("\\boxed{5}")], 0.0),
]
JSONL_CONFIGS = [
    ExportConfig(format="trl-sft", include_reasoning=True),
    ExportConfig(format="trl-sft", prompt_completion=True),
    ExportConfig(format="trl-dpo", max_pairs_per_task=3),
    ExportConfig(format="sharegpt"),
    ExportConfig(format="sharegpt-ranking"),
    ExportConfig(format="react"),
    ExportConfig(format="react", react_form="text"),
    ExportConfig(format="trajectory"),
    ExportConfig(format="trl-grpo"),
]


def load_json(path: Path, cache: Path) -> list[dict[str, Any]]:
    ds = datasets.load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
    return ds.to_list()


def file_rows(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for _, line in iter_jsonl(path)]


@pytest.mark.parametrize("cfg", JSONL_CONFIGS, ids=lambda c: f"{c.format}-{c.path}")
def test_jsonl_export_loads_with_datasets_unchanged(cfg: ExportConfig, tmp_path: Path) -> None:
    out = tmp_path / cfg.path
    result = write_export(cfg, TRAJS, TASKS, out)
    rows = file_rows(out)
    assert result.written == {out: len(rows)} and len(rows) >= 2
    # the same rows the library builds, and datasets reads them back with nothing added
    assert rows == json.loads(json.dumps(export_records(cfg, TRAJS, TASKS)[0]))
    assert load_json(out, tmp_path / "cache") == rows
    assert all(row["id"] and row["task_id"] in TASKS for row in rows)
    if cfg.format.startswith("sharegpt"):
        assert all(validate_sharegpt(row) == [] for row in rows)


def test_refusals_are_counted_by_reason(tmp_path: Path) -> None:
    result = write_export(ExportConfig(format="trl-sft"), TRAJS, TASKS, tmp_path / "s.jsonl")
    assert result.skipped == {"malformed_tool_call": 1}
    react = write_export(ExportConfig(format="react"), TRAJS, TASKS, tmp_path / "r.jsonl")
    assert react.skipped == {"malformed_tool_call": 1, "multi_user_turns": 1}


def test_trl_chat_template_renders_loaded_rows(tmp_path: Path, smollm_path: Path) -> None:
    from transformers import AutoTokenizer
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    tok = AutoTokenizer.from_pretrained(smollm_path)
    for cfg in (
        ExportConfig(format="trl-sft", prompt_completion=True),
        ExportConfig(format="trl-dpo"),
    ):
        out = tmp_path / cfg.path
        write_export(cfg, TRAJS, TASKS, out)
        for row in load_json(out, tmp_path / "cache"):
            assert is_conversational(row)
            rendered = maybe_apply_chat_template(row, tok)
            assert isinstance(rendered["prompt"], str) and "<|im_start|>user" in rendered["prompt"]
    write_export(ExportConfig(format="hf"), TRAJS, TASKS, tmp_path / "hf")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"))
    for row in loaded["train"]:  # the Json() columns decode to what the template needs
        assert is_conversational(row)
        text = maybe_apply_chat_template(row, tok)["text"]
        assert row["messages"][-1]["content"] + "<|im_end|>" in text


def hf_rows(cfg: ExportConfig) -> list[dict[str, Any]]:
    return with_all_rewards(export_records(cfg, TRAJS, TASKS)[0])


def test_hf_folder_loads_with_both_apis_and_rows_equal(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("agentmill.export.hf.SHARD_ROWS", 2)  # several shards per split
    cfg = ExportConfig(format="hf", split=True, save_to_disk=True, license="cc-by-4.0")
    folder = tmp_path / "hf"
    result = write_export(cfg, TRAJS, TASKS, folder)
    expected = split_rows(hf_rows(cfg), TASKS, cfg.val_fraction)
    shards = sorted(p.name for p in result.written)
    assert "train-00000-of-00003.parquet" in shards and len(shards) >= 4
    assert sum(result.written.values()) == len(TRAJS) - 1  # the malformed call is refused
    loaded = datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    on_disk = datasets.load_from_disk(str(folder))
    for split in ("train", "validation"):
        assert loaded[split].to_list() == expected[split] == on_disk[split].to_list()
    row = loaded["validation"][0]
    assert row["task_id"] == T_VAL.id and set(row["rewards"]) == {"math", "format"}
    assert loaded["train"].features["messages"].feature == datasets.Json()
    front = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    assert front["license"] == "cc-by-4.0" and "agentmill" in front["tags"]
    assert front["configs"][0]["data_files"] == [
        {"split": "train", "path": "data/train-*"},
        {"split": "validation", "path": "data/validation-*"},
    ]


def test_hf_reexport_replaces_old_shards_and_spares_foreign_folders(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    write_export(ExportConfig(format="hf", split=True, save_to_disk=True), TRAJS, TASKS, folder)
    write_export(ExportConfig(format="hf"), TRAJS[:2], TASKS, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "data"]
    assert [p.name for p in (folder / "data").iterdir()] == ["train-00000-of-00001.parquet"]
    assert len(datasets.load_dataset(str(folder), cache_dir=str(tmp_path / "c"))["train"]) == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="not an agentmill hf export"):
        write_export(ExportConfig(format="hf"), TRAJS, TASKS, mine)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_hf_card_reports_counts_sources_models_rewards(tmp_path: Path) -> None:
    cfg = ExportConfig(format="hf", split=True)
    write_export(cfg, TRAJS, TASKS, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    expected = split_rows(hf_rows(cfg), TASKS, cfg.val_fraction)
    for split, rows in expected.items():
        tasks = len({r["task_id"] for r in rows})
        assert f"| {split} | {len(rows)} | {tasks} |" in card
    assert "| smollm2-135m | 7 |" in card and "| teacher-b | 1 |" in card
    assert "| math | 8 | 0.500 |" in card and "| format | 2 | 0.750 |" in card
    assert "| malformed_tool_call | 1 |" in card
    assert "## Resolved run config\n\nnone" in card  # not exported from a run folder


def test_hf_float_drift_is_detected_where_datasets_changes_floats(tmp_path: Path) -> None:
    # datasets decodes Json() with pandas' ujson: "0.3" reads back as 0.30000000000000004;
    # 13 significant digits survive (datasets' own encoding would keep 10: we encode first)
    def convert(i: int, amount: float) -> Trajectory:
        return traj(
            T_CONVERT, i, [asst(None, [call(0, "convert", {"amount": amount})]), asst("x")], 1
        )

    drifting, precise = convert(5, 0.3), convert(6, 0.1234567890123)
    trajs = [*TRAJS, drifting, precise]
    result = write_export(ExportConfig(format="hf"), trajs, TASKS, tmp_path / "hf")
    assert len(result.notes) == 1 and "1 rows hold a float" in result.notes[0]
    rows = with_all_rewards(export_records(ExportConfig(format="hf"), trajs, TASKS)[0])
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "c"))["train"]
    differ = [a["id"] for a, b in zip(loaded.to_list(), rows, strict=True) if a != b]
    flagged = [r["id"] for r in rows if float_drift_rows([r])]
    assert differ == flagged == [drifting.id]


VERL_RL_SCHEMA = pa.schema(
    {
        "data_source": pa.string(),
        "prompt": pa.list_(pa.struct({"role": pa.string(), "content": pa.string()})),
        "ability": pa.string(),
        "reward_model": pa.struct({"style": pa.string(), "ground_truth": pa.string()}),
        "extra_info": pa.struct(
            {
                "split": pa.string(),
                "index": pa.int64(),
                # ours: the task id and how to decode the ground truth
                "task_id": pa.string(),
                "ground_truth_format": pa.string(),
                "need_tools_kwargs": pa.bool_(),
                "tools_kwargs": pa.struct(
                    {
                        name: pa.struct({"create_kwargs": pa.struct({"ground_truth": pa.string()})})
                        for name in ("weather", "calc", "convert", "search")
                    }
                ),
            }
        ),
        "agent_name": pa.string(),
    }
)


def test_verl_rl_parquet_matches_the_reference_schema(tmp_path: Path) -> None:
    cfg = ExportConfig(format="verl", tool_class="pkg.tools.AgentmillTool", split=True)
    out = tmp_path / "rl.parquet"
    result = write_export(cfg, [], TASKS, out)
    files = {p.name: n for p, n in result.written.items()}
    assert files == {"rl.train.parquet": 4, "rl.validation.parquet": 1}
    for path in result.written:
        table = pq.read_table(path)
        assert table.schema.remove_metadata() == VERL_RL_SCHEMA
        for row in table.to_pylist():
            assert row["extra_info"]["split"] == path.stem.split(".")[1]
    val = pq.read_table(tmp_path / "rl.validation.parquet").to_pylist()[0]
    assert val["extra_info"]["task_id"] == T_VAL.id and val["agent_name"] == "single_turn_agent"
    tools = yaml.safe_load((tmp_path / "rl.tools.yaml").read_text())["tools"]
    assert [t["tool_schema"]["function"]["name"] for t in tools] == [
        "weather",
        "calc",
        "convert",
        "search",
    ]
    assert {t["class_name"] for t in tools} == {"pkg.tools.AgentmillTool"}
    with pytest.raises(UserError, match="set tool_class"):
        write_export(ExportConfig(format="verl"), [], TASKS, tmp_path / "x.parquet")


def test_verl_sft_messages_exact_tools_null_filled_only_when_mixed(tmp_path: Path) -> None:
    cfg = ExportConfig(format="verl-sft")
    mixed = write_export(cfg, TRAJS, TASKS, tmp_path / "mixed.parquet")
    rows = export_records(cfg, TRAJS, TASKS)[0]
    back = pq.read_table(tmp_path / "mixed.parquet").to_pylist()
    assert [r["messages"] for r in back] == [r["messages"] for r in rows]  # always exact
    assert read_verl_sft(tmp_path / "mixed.parquet") == rows  # nulls stripped again
    differ = sum(a["tools"] != b["tools"] for a, b in zip(back, rows, strict=True))
    assert differ > 0 and mixed.notes == [
        f"mixed.parquet: {differ} rows read back with null keys Arrow added to their tools "
        "(tools with different keys in one file; see docs/formats.md, verl-sft)"
    ]
    args = back[0]["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(args) == {"city": "Paris"}
    same_tools = [t for t in TRAJS if t.task_id == T_CONVERT.id]  # one tool set: exact
    uniform = write_export(cfg, same_tools, TASKS, tmp_path / "one.parquet")
    assert uniform.notes == []
    assert (
        pq.read_table(tmp_path / "one.parquet").to_pylist()
        == export_records(cfg, same_tools, TASKS)[0]
    )


def sides_of(result: Any, key: Any) -> dict[str, set[str]]:
    """task ids per side (file name's second-last suffix) of a split export."""
    out: dict[str, set[str]] = {}
    for path in result.written:
        side = "validation" if "validation" in path.name else "train"
        table = pq.read_table(path).to_pylist() if path.suffix == ".parquet" else file_rows(path)
        out.setdefault(side, set()).update(key(r) for r in table)
    return out


QS = [Task.create(f"q{k}", str(k)) for k in range(30)]
MANY = [
    traj(task, i, [asst(f"\\boxed{{{k + i % 2}}}")], float(i % 2 == 0))
    for k, task in enumerate([*QS, T_VAL])
    for i in range(3)
]


@pytest.mark.parametrize("fmt", sorted(set(FORMATS) - {"hf"}))
def test_split_keeps_every_task_on_one_side(fmt: str, tmp_path: Path) -> None:
    tasks = {t.id: t for t in [*QS, T_VAL]}
    cfg = ExportConfig(format=fmt, split=True, val_fraction=0.3, tool_class="x.Y")
    whole = export_records(cfg, MANY, tasks)[0]
    result = write_export(cfg, MANY, tasks, tmp_path / f"out{Path(cfg.path).suffix}")
    assert sum(result.written.values()) == len(whole) > 0
    key = (lambda r: r["extra_info"]["task_id"]) if fmt == "verl" else (lambda r: r["task_id"])
    sides = sides_of(result, key)
    assert set(sides) == {"train", "validation"} and not sides["train"] & sides["validation"]
    assert sides["train"] | sides["validation"] == {key(r) for r in whole}


def test_the_tasks_own_split_wins_over_the_hash(tmp_path: Path) -> None:
    forced_train = Task.create("q-train", "1", split="train")
    tasks = {t.id: t for t in [*QS, T_VAL, forced_train]}
    trajs = [*MANY, traj(forced_train, 0, [asst("1")], 1.0)]
    none_val = ExportConfig(format="trl-sft", split=True, val_fraction=0.0)
    result = write_export(none_val, trajs, tasks, tmp_path / "a.jsonl")
    assert sides_of(result, lambda r: r["task_id"])["validation"] == {T_VAL.id}
    all_val = ExportConfig(format="trl-sft", split=True, val_fraction=1.0)
    result = write_export(all_val, trajs, tasks, tmp_path / "b.jsonl")
    assert sides_of(result, lambda r: r["task_id"])["train"] == {forced_train.id}


def test_hf_and_verl_put_each_task_on_the_same_side(tmp_path: Path) -> None:
    tasks = {t.id: t for t in [*QS, T_VAL]}
    cfg = ExportConfig(format="hf", split=True, val_fraction=0.3)
    write_export(cfg, MANY, tasks, tmp_path / "hf")
    loaded = datasets.load_dataset(str(tmp_path / "hf"), cache_dir=str(tmp_path / "c"))
    hf_sides = {s: {r["task_id"] for r in loaded[s]} for s in ("train", "validation")}
    verl = ExportConfig(format="verl", split=True, val_fraction=0.3)
    result = write_export(verl, [], tasks, tmp_path / "rl.parquet")
    assert sides_of(result, lambda r: r["extra_info"]["task_id"]) == hf_sides
    assert T_VAL.id in hf_sides["validation"] and len(hf_sides["train"]) > 10


def test_sharegpt_dataset_info_entries_are_merged(tmp_path: Path) -> None:
    info_path = tmp_path / "dataset_info.json"
    info_path.write_text(json.dumps({"theirs": {"file_name": "theirs.json"}}))
    write_export(
        ExportConfig(format="sharegpt", split=True, val_fraction=0.5),
        TRAJS,
        TASKS,
        tmp_path / "sg.json",
    )
    write_export(ExportConfig(format="sharegpt-ranking"), TRAJS, TASKS, tmp_path / "pref.json")
    info = json.loads(info_path.read_text())
    assert info["theirs"] == {"file_name": "theirs.json"}
    assert info["sg.train"]["file_name"] == "sg.train.json"
    assert info["sg.validation"]["columns"] == {
        "messages": "conversations",
        "system": "system",
        "tools": "tools",
    }
    assert info["pref"] == {
        "file_name": "pref.json",
        "formatting": "sharegpt",
        "ranking": True,
        "columns": {
            "messages": "conversations",
            "system": "system",
            "tools": "tools",
            "chosen": "chosen",
            "rejected": "rejected",
        },
    }
    for name, entry in info.items():
        if name != "theirs":
            assert (tmp_path / entry["file_name"]).exists()


def stage_scores(kind: str, pairs: list[tuple[Trajectory, Task]]) -> list[float | None]:
    reward = build_reward(ScoreConfig(rewards=[kind]).rewards[0])
    scored = [asyncio.run(score_trajectory(t, task, [reward])) for t, task in pairs]
    return [s.rewards.get(reward.name) for s in scored]


@pytest.mark.parametrize("kind", ["math", "tool_call", "format"])
def test_trl_rewards_on_the_loaded_grpo_file_equal_the_score_stage(
    kind: str, tmp_path: Path
) -> None:
    out = tmp_path / "grpo.jsonl"
    write_export(ExportConfig(format="trl-grpo"), [], TASKS, out)
    ds = datasets.load_dataset("json", data_files=str(out), split="train", cache_dir=str(tmp_path))
    rome = [
        asst(None, [call(0, "weather", {"city": "Rome"})]),
        res(0, "weather", "rain"),
        asst("Rain."),
    ]
    bad_call = [asst(None, [call(0, "calc", None, raw="{6*")]), asst("42")]
    answers = {T_CALLS.id: rome, T_VAL.id: [asst("\\boxed{4}")], T_WEATHER.id: bad_call}
    rows = ds.to_list()
    completions = [answers.get(r["task_id"], [asst("no idea")]) for r in rows]
    pairs = [
        (Trajectory(id="x", task_id=r["task_id"], messages=c), TASKS[r["task_id"]])
        for r, c in zip(rows, completions, strict=True)
    ]
    # as GRPOTrainer passes them: every column but the prompt, one list per column
    columns = {k: [r[k] for r in rows] for k in ds.column_names if k != "prompt"}
    dicts = [[m.to_openai(dict_arguments=True) for m in c] for c in completions]
    got = reward_func(kind)([r["prompt"] for r in rows], dicts, **columns)
    assert got == stage_scores(kind, pairs)
    assert len(set(got)) > 1


def test_dpo_options_reach_the_pairs(tmp_path: Path) -> None:
    tied = [traj(T_CONVERT, 0, [asst("13.75")], 1.0), TRAJS[3]]  # both right; one uses a tool
    plain = ExportConfig(format="trl-dpo")
    assert export_records(plain, tied, TASKS)[0] == []
    simpler = ExportConfig(format="trl-dpo", simpler_mode=True, simpler_min_steps=1)
    pairs = export_records(simpler, tied, TASKS)[0]
    assert [(p["kind"], p["rejected_id"]) for p in pairs] == [("simpler", TRAJS[3].id)]
    wide = ExportConfig(format="trl-dpo", min_margin=2.0)
    assert export_records(wide, TRAJS, TASKS)[0] == []
    by_format = ExportConfig(format="trl-dpo", reward="format", min_margin=0.5)
    assert [p["chosen_id"] for p in export_records(by_format, TRAJS, TASKS)[0]] == [TRAJS[0].id]


def test_a_broken_dataset_info_is_refused_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "dataset_info.json").write_text("{broken")
    with pytest.raises(UserError, match="dataset_info.json is not valid JSON"):
        write_export(ExportConfig(format="sharegpt"), TRAJS, TASKS, tmp_path / "sg.json")
    assert (tmp_path / "dataset_info.json").read_text() == "{broken"
