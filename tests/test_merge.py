"""`agentmill merge`: mergekit on two fine-tuned copies of a tiny random 2-layer Llama built
here; for each method the merged weights equal the method's formula on a checked tensor."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

pytest_plugins = ["trainer_fixtures"]  # tiny_llama (with the embedded model's tokenizer)

CHECKED = "model.layers.1.mlp.down_proj.weight"
CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 128,
    "max_position_embeddings": 128,
}


def _tensor(folder: Path, name: str = CHECKED) -> Any:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")[name].double()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """base, and two "fine-tuned" copies: base plus a different seeded delta each."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("merge_models")
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(**CONFIG))
    out = {"base": root / "base"}
    base.save_pretrained(out["base"])
    for i, name in enumerate(("a", "b"), 1):
        torch.manual_seed(i)
        tuned = LlamaForCausalLM(LlamaConfig(**CONFIG))
        tuned.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in tuned.parameters():
                p.add_(0.02 * torch.randn_like(p))
        out[name] = root / name
        tuned.save_pretrained(out[name])
    return out


def _merge(cli, tmp_path: Path, cfg: dict[str, Any]) -> Path:
    config = tmp_path / "merge.yaml"
    config.write_text(yaml.safe_dump(cfg | {"dtype": "float32"}))
    out = tmp_path / "merged"
    rc, stdout, err = cli("merge", config, "--out", out)
    assert rc == 0, stdout + err
    assert orjson.loads((out / "merge.json").read_bytes())["merge_method"] == cfg["merge_method"]
    return out


def _slerp(t: float, v0: Any, v1: Any) -> Any:
    a, b = v0.flatten(), v1.flatten()
    dot = float((a / a.norm()) @ (b / b.norm()))
    if abs(dot) > 0.9995:
        return (1 - t) * v0 + t * v1
    theta = math.acos(dot)
    s0 = math.sin((1 - t) * theta) / math.sin(theta)
    s1 = math.sin(t * theta) / math.sin(theta)
    return s0 * v0 + s1 * v1


def _ties(base: Any, tuned: list[Any], weights: list[float]) -> Any:
    """TIES without trimming (density 1): elect each weight's sign by the sum of the weighted
    deltas, keep the deltas that agree, divide by the weights that agree."""
    import torch

    deltas = torch.stack([w * (t - base) for t, w in zip(tuned, weights, strict=True)])
    w = torch.tensor(weights, dtype=deltas.dtype).view(-1, *([1] * base.dim()))
    elected = torch.where(deltas.sum(0) >= 0, 1.0, -1.0).to(deltas.dtype)
    agree = (deltas.sign() == elected).to(deltas.dtype)
    divisor = (w * agree).sum(0)
    divisor[divisor == 0] = 1
    return base + (deltas * agree).sum(0) / divisor


METHODS = ["linear", "task_arithmetic", "slerp", "ties", "dare_ties"]


@pytest.mark.parametrize("method", METHODS)
def test_merged_weights_follow_the_formula(cli, tmp_path, models, method) -> None:
    base, a, b = (_tensor(models[k]) for k in ("base", "a", "b"))
    wa, wb = 0.3, 0.7
    two = [
        {"model": str(models["a"]), "parameters": {"weight": wa}},
        {"model": str(models["b"]), "parameters": {"weight": wb}},
    ]
    if method == "linear":
        cfg = {"merge_method": "linear", "models": two}
        expected = (wa * a + wb * b) / (wa + wb)
    elif method == "task_arithmetic":
        cfg = {
            "merge_method": "task_arithmetic",
            "base_model": str(models["base"]),
            "models": two,
            "parameters": {"normalize": False},
        }
        expected = base + wa * (a - base) + wb * (b - base)
    elif method == "slerp":
        cfg = {
            "merge_method": "slerp",
            "base_model": str(models["a"]),
            "models": [{"model": str(models["a"])}, {"model": str(models["b"])}],
            "parameters": {"t": 0.4},
        }
        expected = _slerp(0.4, a, b)
    else:  # ties, and dare_ties with nothing dropped (density 1): the same formula
        for m in two:
            m["parameters"]["density"] = 1.0
        cfg = {
            "merge_method": method,
            "base_model": str(models["base"]),
            "models": two,
            "parameters": {"normalize": True},
        }
        expected = _ties(base, [a, b], [wa, wb])
    merged = _tensor(_merge(cli, tmp_path, cfg))
    assert merged.shape == base.shape
    assert (merged - expected).abs().max() < 1e-5
    assert (merged - a).abs().max() > 1e-3 and (merged - b).abs().max() > 1e-3  # really mixed


def test_dare_drops_deltas_with_its_seed(cli, tmp_path, models) -> None:
    base, a = _tensor(models["base"]), _tensor(models["a"])
    cfg = {
        "merge_method": "dare_ties",
        "base_model": str(models["base"]),
        "models": [{"model": str(models["a"]), "parameters": {"weight": 1.0, "density": 0.5}}],
        "parameters": {"normalize": False, "rescale": False},
    }
    kept = (_tensor(_merge(cli, tmp_path, cfg)) - base).abs() > 1e-9
    # about half of the deltas survive, and the survivors are a's deltas unchanged
    assert 0.4 < kept.double().mean() < 0.6
    merged = _tensor(tmp_path / "merged")
    assert (merged[kept] - a[kept]).abs().max() < 1e-5


def test_merged_model_loads_in_the_local_backend(cli, tmp_path, models) -> None:
    from transformers import AutoModelForCausalLM

    out = _merge(
        cli,
        tmp_path,
        {
            "merge_method": "linear",
            "models": [
                {"model": str(models[k]), "parameters": {"weight": 1.0}} for k in ("a", "b")
            ],
        },
    )
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize(
    ("cfg", "error"),
    [
        ({"merge_method": "linear", "models": [{"model": "org/not-here"}]}, "not a local model"),
        ({"merge_method": "linear", "modles": []}, "mergekit's config format"),
        ("- just a list", "not a mergekit config"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(cli, tmp_path, cfg, error) -> None:
    config = tmp_path / "merge.yaml"
    config.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    rc, _, err = cli("merge", config, "--out", tmp_path / "o")
    assert rc == 2 and error in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.model
def test_merge_then_eval_each_input_and_the_merge(cli, tmp_path, tiny_llama) -> None:
    """Two copies of the tiny Llama that carries the embedded tokenizer (so the agent loop can
    run it); a linear merge, then `--tasks`: one eval column per input and one for the merge."""
    import shutil

    a, b = tmp_path / "copy_a", tmp_path / "copy_b"
    shutil.copytree(tiny_llama, a)
    shutil.copytree(tiny_llama, b)
    config = tmp_path / "merge.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "merge_method": "linear",
                "models": [{"model": str(p), "parameters": {"weight": 0.5}} for p in (a, b)],
                "dtype": "float32",
            }
        )
    )
    tasks = tmp_path / "held.jsonl"
    tasks.write_text('{"question": "What is 2 + 2?", "answer": "4"}\n')
    eval_cfg = tmp_path / "eval.yaml"
    eval_cfg.write_text(
        "backends: {teacher: {type: local}}\nsources: [{path: unused.jsonl}]\n"
        "rollout: {agent: {max_steps: 1}, params: {max_tokens: 4}}\nscore: {rewards: [math]}\n"
    )
    out = tmp_path / "merged"
    rc, stdout, err = cli(
        "merge", config, "--out", out, "--tasks", tasks, "--eval-config", eval_cfg
    )
    assert rc == 0, stdout + err
    report = orjson.loads((out / "eval" / "eval.json").read_bytes())
    assert list(report["models"]) == ["copy_a", "copy_b", "merged"]
    assert all(r["tasks"] == 1 for r in report["models"].values())
    assert "copy_a" in stdout and "merged" in stdout
