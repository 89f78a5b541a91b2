"""`agentmill check-template` on real exports: the embedded model's tokenizer with our tool
template passes clean records (parallel calls, a tool error, multi-turn; SFT, prompt-completion
and DPO), and each planted defect (templates edited from ours, one record) is found with its
kind."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from trainer_fixtures import agent_trajectories, dpo_samples, export_jsonl

from agentmill.export.template_check import check_file, load_tokenizer
from agentmill.rollout.protocol import load_template

pytestmark = pytest.mark.model  # the embedded model's tokenizer

ASSISTANT_OPEN = '{{- "<|im_start|>assistant\\n" -}}\n{%- generation -%}'
TOOL_LINE = '{{- "<tool_response>\\n" + text(message.content) + "\\n</tool_response>" -}}'
GEN, ENDGEN = "{%- generation -%}", "{%- endgeneration -%}"


def edit(old: str, new: str, template: str | None = None) -> str:
    """Our shipped template with one edit; fails if the template no longer has `old`."""
    template = template or load_template()
    assert template.count(old) == 1, f"the shipped template changed: {old!r}"
    return template.replace(old, new)


@pytest.fixture(scope="module")
def embedded(smollm_path: Path) -> tuple[Any, str]:
    """The embedded model's tokenizer and our tool template (loaded once)."""
    tok, template, source = load_tokenizer("smollm2-135m")
    assert "agentmill's tool template" in source
    return tok, template


@pytest.fixture
def sft_file(tmp_path: Path) -> Path:
    path = tmp_path / "sft.jsonl"
    assert len(export_jsonl(path, agent_trajectories(), "trl-sft")) == 3
    return path


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


Check = Callable[..., Any]


@pytest.fixture
def check(embedded: tuple[Any, str], sft_file: Path) -> Check:
    """check_file on the SFT export (or `path`) with the embedded tokenizer and `template`."""
    tok, ours = embedded

    def run(template: str | None = None, path: Path | None = None) -> Any:
        return check_file(path or sft_file, tok, template or ours, max_examples=5)

    return run


def test_clean_exports_pass(check: Check, tmp_path: Path) -> None:
    report = check()
    assert report.clean and report.checked == 3 and report.markers, report.to_dict()
    pc_file = tmp_path / "pc.jsonl"
    export_jsonl(pc_file, agent_trajectories(), "trl-sft", prompt_completion=True)
    pc = check(path=pc_file)
    assert pc.clean and pc.checked == 3, pc.to_dict()


def test_clean_dpo_pairs_pass(check: Check, tmp_path: Path) -> None:
    pairs = export_jsonl(tmp_path / "dpo.jsonl", dpo_samples(), "trl-dpo")
    assert len(pairs) == 3 and any(m.get("tool_calls") for p in pairs for m in p["rejected"])
    report = check(path=tmp_path / "dpo.jsonl")
    assert report.clean and report.checked == 3, report.to_dict()


MERGED_TOOLS = (
    '{%- if loop.first or loop.previtem.role != "tool" -%}{{- "<tool_response>\\n" -}}'
    '{%- else -%}{{- "\\n" -}}{%- endif -%}{{- text(message.content) -}}'
    '{%- if loop.last or loop.nextitem.role != "tool" -%}{{- "\\n</tool_response>" -}}'
    "{%- endif -%}"
)


def test_merged_tool_results_found(check: Check, tmp_path: Path) -> None:
    merged = edit(TOOL_LINE, MERGED_TOOLS)
    report = check(merged)
    # only the parallel record has consecutive results (three of them: two gaps, one record)
    assert dict(report.counts) == {"tool_result_merged": 1}, report.to_dict()
    assert "messages 3 and 4" in report.examples["tool_result_merged"][0]["detail"]
    # a DPO pair counts once, though both of its conversations share the merged results
    export_jsonl(tmp_path / "dpo.jsonl", dpo_samples(), "trl-dpo")
    report = check(merged, tmp_path / "dpo.jsonl")
    assert dict(report.counts) == {"tool_result_merged": 1} and report.flagged == 1
    labels = [ex["record"] for ex in report.examples["tool_result_merged"]]
    assert labels == ["line 1 (chosen)", "line 1 (rejected)"]


def test_dropped_tool_results_found(check: Check) -> None:
    keeps_last = edit(
        TOOL_LINE,
        '{%- if loop.last or loop.nextitem.role != "tool" -%}' + TOOL_LINE + "{%- endif -%}",
    )
    report = check(keeps_last)
    assert dict(report.counts) == {"tool_result_missing": 1}, report.to_dict()
    assert "Paris: sunny" in report.examples["tool_result_missing"][0]["detail"]


def test_moved_system_prompt_found(check: Check) -> None:
    moved = edit(
        '{{- "<|im_start|>system\\n" + text(messages[0].content) -}}',
        '{{- "<|im_start|>system\\n" -}}',
    )
    moved = edit(
        "{%- if add_generation_prompt -%}",
        '{%- if messages[0].role == "system" -%}{{- "<|im_start|>system\\n" + '
        'text(messages[0].content) + "<|im_end|>\\n" -}}{%- endif -%}\n'
        "{%- if add_generation_prompt -%}",
        moved,
    )
    report = check(moved)
    assert dict(report.counts) == {"system_moved": 2}, report.to_dict()  # two records have one


def test_empty_think_inside_the_mask_found(check: Check) -> None:
    think = '{{- "<think>\\n\\n</think>\\n\\n" -}}'
    inside = edit(ASSISTANT_OPEN, ASSISTANT_OPEN + think)
    report = check(inside)
    assert dict(report.counts) == {"empty_think_supervised": 3}, report.to_dict()
    # Qwen3's non-thinking form: the empty block is part of the prompt, before the markers
    outside = edit(ASSISTANT_OPEN, ASSISTANT_OPEN.replace(GEN, think + GEN))
    prompt_end = '{{- "<|im_start|>assistant\\n" -}}{%- endif -%}'
    assert check(outside).counts == {"assistant_unmasked": 3}  # the prompt lacks it
    outside = edit(prompt_end, prompt_end.replace("{%- endif", think + "{%- endif"), outside)
    assert check(outside).clean, check(outside).to_dict()


def test_markers_around_the_wrong_span_found(check: Check) -> None:
    no_assistant_markers = edit(GEN, "").replace(ENDGEN, "")
    on_user = edit(
        '{{- "<|im_start|>" + message.role + "\\n" + text(message.content) + "<|im_end|>\\n" -}}',
        GEN
        + '{{- "<|im_start|>" + message.role + "\\n" + text(message.content) + "<|im_end|>\\n" -}}'
        + ENDGEN,
        no_assistant_markers,
    )
    report = check(on_user)
    assert set(report.counts) == {"mask_not_assistant", "assistant_unmasked"}, report.to_dict()
    assert report.counts["assistant_unmasked"] == 3
    end_outside = edit('{{- "<|im_end|>" -}}\n' + ENDGEN, ENDGEN + '{{- "<|im_end|>" -}}')
    report = check(end_outside)
    assert dict(report.counts) == {"assistant_unmasked": 3}, report.to_dict()
    assert "<|im_end|>" in report.examples["assistant_unmasked"][0]["detail"]


def test_arguments_the_template_cannot_render_found(check: Check, tmp_path: Path) -> None:
    mapping_only = edit(
        "(fn.arguments if fn.arguments is string else (fn.arguments | tojson))",
        '(fn.arguments | tojson if fn.arguments is mapping else "{}")',
    )
    records = [json.loads(x) for x in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert check(mapping_only).clean  # dict arguments, as we export them
    call = records[1]["messages"][1]["tool_calls"][0]["function"]
    call["arguments"] = json.dumps(call["arguments"])  # the OpenAI wire form: a JSON string
    report = check(mapping_only, write_jsonl(tmp_path / "str-args.jsonl", records))
    assert dict(report.counts) == {"tool_call_missing": 1}, report.to_dict()
    assert "'expression'" in report.examples["tool_call_missing"][0]["detail"]
    assert report.examples["tool_call_missing"][0]["record"] == "line 2"


def test_missing_and_reordered_content_found(check: Check) -> None:
    no_text = edit("{%- set body = text(message.content) -%}", '{%- set body = "" -%}')
    report = check(no_text)
    assert set(report.counts) == {"content_missing"} and report.counts["content_missing"] == 3
    reversed_turns = edit("{%- for message in rest -%}", "{%- for message in rest | reverse -%}")
    assert "out_of_order" in check(reversed_turns).counts


def test_template_without_markers_falls_back_to_span_search(check: Check) -> None:
    plain = edit(GEN, "").replace(ENDGEN, "")
    report = check(plain)
    assert dict(report.counts) == {"no_generation_markers": 3} and not report.markers
    assert "span search" in report.examples["no_generation_markers"][0]["detail"]
    plain_merged = edit(TOOL_LINE, '{{- text(message.content) + "\\n" -}}', plain)
    report = check(plain_merged)
    assert set(report.counts) == {"no_generation_markers", "tool_result_merged"}


def test_render_error_is_counted_per_record(check: Check) -> None:
    raising = edit(
        '{%- elif message.role == "tool" -%}',
        '{%- elif message.role == "tool" -%}{{- raise_exception("no tools here") -}}',
    )
    report = check(raising)
    assert dict(report.counts) == {"render_error": 3}
    assert "no tools here" in report.examples["render_error"][0]["detail"]


def test_smollm2_own_template_drops_tools(smollm_path: Path, sft_file: Path) -> None:
    report = check_file(sft_file, str(smollm_path))  # the folder: its own ChatML template
    assert "its own chat template" in report.template
    expected = {"tool_call_missing", "tool_schema_missing", "no_generation_markers"}
    assert set(report.counts) == expected and report.flagged == 3, report.to_dict()


def test_cli_exit_codes_and_json(
    cli: Callable[..., tuple[int, str, str]], sft_file: Path, tmp_path: Path
) -> None:
    code, out, _ = cli("check-template", sft_file, "--tokenizer", "smollm2-135m")
    assert code == 0 and "clean" in out and "checked 3 records" in out
    bad = tmp_path / "bad.jinja"
    bad.write_text(edit(GEN, "").replace(ENDGEN, ""))
    args = ("check-template", sft_file, "-t", "smollm2-135m", "--template", bad)
    code, out, _ = cli(*args, "--json", "--max-examples", "1")
    report = json.loads(out)
    assert code == 1 and report["problems"]["no_generation_markers"]["count"] == 3
    assert len(report["problems"]["no_generation_markers"]["examples"]) == 1
    code, out, _ = cli(*args)
    assert code == 1 and "no_generation_markers: 3" in out


def test_cli_bad_input_exits_2(
    cli: Callable[..., tuple[int, str, str]], sft_file: Path, tmp_path: Path
) -> None:
    code, _, err = cli("check-template", tmp_path / "none.jsonl", "-t", "smollm2-135m")
    assert code == 2 and "not found" in err
    code, _, err = cli("check-template", sft_file, "-t", str(tmp_path / "no-such-tokenizer"))
    assert code == 2 and "tokenizer" in err
    code, _, err = cli(
        "check-template", sft_file, "-t", "smollm2-135m", "--template", tmp_path / "x"
    )
    assert code == 2 and "template file" in err
    junk = tmp_path / "junk.jsonl"
    junk.write_text('{"text": "no messages"}\n')
    code, _, err = cli("check-template", junk, "-t", "smollm2-135m")
    assert code == 2 and "no SFT or DPO records" in err
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(sft_file.read_text() + "{not json\n")
    code, out, _ = cli("check-template", mixed, "-t", "smollm2-135m")
    assert code == 0 and "bad_json: 1" in out
    code, _, err = cli("check-template", mixed, "-t", "smollm2-135m", "--strict")
    assert code == 2 and "bad_json: 1" in err
