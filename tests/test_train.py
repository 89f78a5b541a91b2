"""`agentmill train`: real TRL trainers (CPU) on our exports. LoRA SFT and DPO on a tiny
random-weight Llama over a repeated tiny set (the loss must fall); GRPO for two steps with our
math reward (the rewards TRL logs must be the ones our scoring gives); one real LoRA step on the
embedded SmolLM2-135M whose merged model loads back into the `local` backend and answers."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from trainer_fixtures import agent_trajectories, dpo_samples, export_jsonl

pytest_plugins = ["trainer_fixtures"]  # tool_tokenizer, tiny_llama
pytestmark = [
    pytest.mark.model,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning"),
]


def _log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def _losses(out: Path) -> list[float]:
    return [row["loss"] for row in _log(out) if "loss" in row]


def _train(cli, method: str, data: Path, model: Path, out: Path, *options: str) -> list[float]:
    """`agentmill train` with a high learning rate on a tiny set; the finite losses it logged."""
    rc, stdout, err = cli(
        "train", method, data, "--model", model, "--out", out, "--lr", "1e-2",
        "--max-length", "512", "--batch-size", "2", *options,
    )  # fmt: skip
    assert rc == 0, stdout + err
    losses = _losses(out)
    assert all(math.isfinite(x) for x in losses), losses
    return losses


def test_sft_lora_loss_falls_and_the_model_folder_loads(cli, tiny_llama, tmp_path) -> None:
    data = tmp_path / "sft.jsonl"
    records = export_jsonl(data, agent_trajectories() * 4, "trl-sft")  # a repeated tiny set
    out = tmp_path / "sft-model"
    losses = _train(cli, "sft", data, tiny_llama, out, "--max-steps", "6")
    assert len(losses) == 6
    # random weights start at ln(vocabulary) ~ 10.8; LoRA alone moves it slowly but surely
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.15, losses
    summary = orjson.loads((out / "train.json").read_bytes())
    assert summary["records"] == len(records) and summary["steps"] == 6
    assert summary["data_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert summary["chat_template"] == "the model's own"  # tiny_llama carries our template
    assert (out / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(out)  # plain weights: LoRA merged in
    assert not any("lora" in name for name, _ in merged.named_parameters())
    from trl.chat_template_utils import has_generation_markers

    tok = AutoTokenizer.from_pretrained(out)
    assert has_generation_markers(tok.chat_template)  # saved with the template it trained with


def test_dpo_lora_loss_falls(cli, tiny_llama, tmp_path) -> None:
    data = tmp_path / "dpo.jsonl"
    export_jsonl(data, dpo_samples() * 3, "trl-dpo")
    out = tmp_path / "dpo-model"
    losses = _train(cli, "dpo", data, tiny_llama, out, "--max-steps", "4")
    assert len(losses) == 4 and losses[0] == pytest.approx(
        math.log(2), abs=0.02
    )  # policy == reference at start
    assert sum(losses[-2:]) / 2 < losses[0] - 0.05, losses


def test_grpo_logs_our_math_rewards(cli, tiny_llama, tmp_path, monkeypatch) -> None:
    from agentmill.integrations import trl as integ
    from agentmill.records import Task
    from agentmill.scoring import math_reward

    seen: list[tuple[str, str, float | None]] = []
    wrapped = integ.reward_func

    def recording(name: Any) -> Any:  # our reward function, remembering what it scored
        func = wrapped(name)

        def rec(prompts: Any, completions: list[Any], **kw: Any) -> list[float | None]:
            out = func(prompts, completions, **kw)
            for c, gt, r in zip(completions, kw["ground_truth"], out, strict=True):
                seen.append((c if isinstance(c, str) else c[-1]["content"], gt, r))
            return out

        rec.__name__ = func.__name__
        return rec

    monkeypatch.setattr(integ, "reward_func", recording)
    data = tmp_path / "grpo.jsonl"
    tasks = [
        Task.create(f"What is {i} + {i}? Answer with the number.", str(2 * i)) for i in range(4)
    ]
    from agentmill.export.grpo import to_grpo

    data.write_text("".join(json.dumps(to_grpo(t)) + "\n" for t in tasks))
    out = tmp_path / "grpo-model"
    rc, stdout, err = cli(
        "train", "grpo", data, "--model", tiny_llama, "--out", out, "--reward", "math",
        "--max-steps", "2", "--num-generations", "2", "--batch-size", "2",
        "--max-completion-length", "8",
    )  # fmt: skip
    assert rc == 0, stdout + err
    logged = [row["rewards/math/mean"] for row in _log(out) if "rewards/math/mean" in row]
    assert len(logged) == 2 and len(seen) == 4  # 2 steps x 1 prompt x 2 completions
    ours = [math_reward(c, gt) for c, gt, _ in seen]
    assert [r for _, _, r in seen] == ours  # what TRL got is what our scoring gives
    assert logged == pytest.approx([sum(ours[:2]) / 2, sum(ours[2:]) / 2])


def test_grpo_policy_calls_our_tools_while_it_generates(
    cli, tiny_llama, tmp_path, monkeypatch
) -> None:
    """`train grpo --tool calculator`: TRL renders our calculator's schema, parses the policy's
    `<tool_call>` with our template, runs OUR calculator between turns and feeds its result
    back; the math reward scores the answer that follows. The policy is a SCRIPTED FAKE
    (`generate` replaced: a call first, then the last tool result as the answer): a random
    2-layer model never writes a call, and this tests the wiring, not learning."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from agentmill.export.grpo import to_grpo
    from agentmill.integrations import trl as integ
    from agentmill.records import Task

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    prompts_seen: list[str] = []

    def scripted_generate(self, input_ids=None, attention_mask=None, **kw):
        rows = []
        for ids in input_ids:
            text = tok.decode(ids, skip_special_tokens=False)
            prompts_seen.append(text)
            turn = text.rsplit("<|im_start|>user", 1)[-1]
            if "<tool_response>" not in turn:
                a = int(turn.split("What is ")[1].split(" ")[0])
                reply = f'<tool_call>\n{{"name": "calculator", "arguments": {{"expression": "{a} * 3"}}}}\n</tool_call>'
            else:
                reply = turn.rsplit("<tool_response>\n", 1)[1].split("\n</tool_response>")[0]
            new = tok(reply + "<|im_end|>", add_special_tokens=False, return_tensors="pt")
            rows.append(torch.cat([ids, new["input_ids"][0]]))
        width = max(len(r) for r in rows)
        pad = tok.pad_token_id
        return torch.stack([torch.cat([r, r.new_full((width - len(r),), pad)]) for r in rows])

    monkeypatch.setattr(LlamaForCausalLM, "generate", scripted_generate)
    calls: list[dict] = []
    wrapped = integ.tool_callable

    def spying(tool):
        fn = wrapped(tool)

        async def call(**arguments):
            calls.append(arguments)
            return await fn(**arguments)

        for attr in ("__name__", "__qualname__", "__doc__", "__signature__", "__annotations__"):
            setattr(call, attr, getattr(fn, attr))
        return call

    monkeypatch.setattr(integ, "tool_callable", spying)
    data = tmp_path / "grpo.jsonl"
    tasks = [Task.create(f"What is {i} times 3?", str(3 * i)) for i in (4, 7)]
    data.write_text("".join(json.dumps(to_grpo(t)) + "\n" for t in tasks))
    out = tmp_path / "grpo-tools"
    rc, stdout, err = cli(
        "train", "grpo", data, "--model", tiny_llama, "--out", out, "--reward", "math",
        "--tool", "calculator", "--max-steps", "1", "--num-generations", "2",
        "--batch-size", "4", "--max-completion-length", "64",
    )  # fmt: skip
    assert rc == 0, stdout + err
    assert sorted(c["expression"] for c in calls) == ["4 * 3", "4 * 3", "7 * 3", "7 * 3"]
    assert any('"name": "calculator"' in p and "<tools>" in p for p in prompts_seen)
    assert any("<tool_response>\n21\n</tool_response>" in p for p in prompts_seen)
    (logged,) = [row for row in _log(out) if "rewards/math/mean" in row]
    assert logged["rewards/math/mean"] == 1.0  # the answers after the tool results are right


def test_grpo_unknown_tool_is_one_line(cli, tiny_llama, tmp_path) -> None:
    data = tmp_path / "grpo.jsonl"
    data.write_text('{"prompt": [{"role": "user", "content": "hi"}], "ground_truth": "1"}\n')
    rc, stdout, err = cli(
        "train", "grpo", data, "--model", tiny_llama, "--out", tmp_path / "m", "--tool", "abacus"
    )
    assert rc == 2 and "--tool 'abacus'" in stdout + err


def test_one_lora_step_on_the_embedded_model_answers(cli, smollm_path, tmp_path) -> None:
    data = tmp_path / "sft.jsonl"
    export_jsonl(data, agent_trajectories()[:1], "trl-sft")
    out = tmp_path / "smol"
    rc, stdout, err = cli(
        "train", "sft", data, "--model", "smollm2-135m", "--out", out,
        "--max-steps", "1", "--batch-size", "1", "--max-length", "512",
    )  # fmt: skip
    assert rc == 0, stdout + err
    summary = orjson.loads((out / "train.json").read_bytes())
    # SmolLM2's own template has neither tools nor generation markers: ours replaces it
    assert summary["chat_template"] == "agentmill tool template"
    from agentmill.backends import build_backend
    from agentmill.config import LocalBackendConfig
    from agentmill.records import Message, SamplingParams

    backend = build_backend("student", LocalBackendConfig(model=str(out)))

    async def ask() -> Any:
        try:
            return await backend.complete(
                [Message(role="user", content="What is the capital of France?")],
                None,
                SamplingParams(temperature=0.0, max_tokens=16),
            )
        finally:
            await backend.aclose()

    reply = asyncio.run(ask())
    assert reply.text.strip() and reply.usage.completion_tokens > 0


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["train", "ppo"], "use sft, dpo or grpo"),
        (["train", "dpo"], "no prompt, chosen, rejected column for dpo"),
        (["train", "sft", "--missing"], "training data not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tiny_llama, tmp_path, args, error) -> None:
    data = tmp_path / "sft.jsonl"
    export_jsonl(data, agent_trajectories(), "trl-sft")
    path = tmp_path / "nope.jsonl" if "--missing" in args else data
    argv = [a for a in args if a != "--missing"]
    rc, _, err = cli(*argv, path, "--model", tiny_llama, "--out", tmp_path / "o")
    assert rc == 2 and error in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "train.json").exists()


def test_checkpoints_resume_where_the_last_run_stopped(cli, tiny_llama, tmp_path) -> None:
    data = tmp_path / "sft.jsonl"
    export_jsonl(data, agent_trajectories(), "trl-sft")
    out = tmp_path / "resumed"
    base = ["train", "sft", data, "--model", tiny_llama, "--out", out, "--batch-size", "1"]
    rc, stdout, err = cli(*base, "--max-steps", "2", "--save-steps", "2", "--lr", "1e-3")
    assert rc == 0, stdout + err
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    first = _log(out)
    rc, stdout, err = cli(*base, "--max-steps", "3", "--save-steps", "2", "--lr", "1e-3")
    assert rc == 0, stdout + err
    summary = orjson.loads((out / "train.json").read_bytes())
    assert summary["resumed_from"].endswith("checkpoint-2") and summary["steps"] == 3
    log = _log(out)
    assert log[: len(first)] == first  # the log goes on; nothing before is lost or repeated
    assert [row["step"] for row in log if "loss" in row] == [1, 2, 3]


@pytest.mark.parametrize("on", [True, False])
def test_activation_checkpointing_follows_the_option(tmp_path, on) -> None:
    from agentmill.train.trainer import TrainOptions, _trl_args

    for method in ("sft", "dpo"):
        args = _trl_args(TrainOptions(method=method, checkpointing=on), tmp_path)
        assert args.activation_checkpointing is on and args.gradient_checkpointing is on
