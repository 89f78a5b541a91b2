"""`agentmill eval MODEL [MODEL ...] --tasks FILE`: held-out figures of models, side by side.

Each model runs the agent loop on the same tasks at temperature 0, one sample per task, through
the pipeline's public API (`pipeline.run` on a derived `RunConfig`): the run folder, the
response cache and resume work as for any run, and a killed eval resumes. The tools, agent
limits, prompts and rewards come from `--config` (any run config; its backends, sources'
paths, filter, curation and exports are replaced; its rollout backend's settings such as
`max_batch_size`, `dtype` or `device` are kept when it is of the same type), else from
`DEFAULT` (the calculator, the math and tool_call rewards).

Figures, from the scored trajectories and their tasks (`figures`):

- `success`: every reward of the trajectory is 1 (as the funnel's "correct");
- `called`: at least one tool call; `well_formed_calls`: calls whose arguments parsed, over all
  calls;
- on tasks that carry expected calls (non-empty): `tool_selection`: the set of tools called is
  the set expected, with no malformed call; `arguments`: the mean `tool_call` score (an F1 in
  which each matched call counts by its argument match);
- on tasks whose expected calls are `[]` (no tool is right): `no_call`: answered without a call;
- `steps`, `completion_tokens`: means.

Proportions carry a 95% Wilson interval, means a normal-approximation one (mean +- 1.96 s/sqrt n).

>>> lo, hi = wilson(45, 50)
>>> round(lo, 3), round(hi, 3)
(0.786, 0.957)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import orjson

from agentmill.config import RunConfig
from agentmill.errors import UserError
from agentmill.store import iter_jsonl

Z = 1.96
DEFAULT: dict[str, Any] = {
    "rollout": {"tools": ["calculator"], "agent": {"max_steps": 4}, "params": {"max_tokens": 256}},
    "score": {"rewards": ["math", "tool_call"]},
}
ENDPOINT = ("model", "base_url", "api_key_env", "headers")
DROPPED = ("filter", "judge", "dedup", "decontaminate", "balance", "tasks_out")


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson score interval of k successes in n."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + Z * Z / n
    center = (p + Z * Z / (2 * n)) / d
    half = Z * math.sqrt(p * (1 - p) / n + Z * Z / (4 * n * n)) / d
    return (max(0.0, center - half), min(1.0, center + half))


def proportion(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"value": k / n if n else None, "k": k, "n": n, "ci95": [round(lo, 4), round(hi, 4)]}


def mean_ci(values: list[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"value": None, "n": 0, "ci95": None}
    m = sum(values) / n
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    half = Z * sd / math.sqrt(n)
    return {"value": round(m, 4), "n": n, "ci95": [round(m - half, 4), round(m + half, 4)]}


def label_of(model: str) -> str:
    """A folder-safe label for a model name or path."""
    name = Path(model.rstrip("/")).name or model
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def eval_config(
    model: str,
    tasks: Path,
    base: RunConfig | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
) -> RunConfig:
    """The run config that evaluates `model` on `tasks` (see the module docstring)."""
    data = base.model_dump(mode="json", exclude_none=True) if base else dict(DEFAULT)
    if Path(model).expanduser().is_dir():  # the same folder, however it is named
        model = str(Path(model).expanduser().absolute())
    rollout = dict(data.get("rollout") or {})
    backend: dict[str, Any] = {"type": "local", "model": model}
    if base_url:
        backend = {"type": "openai", "base_url": base_url, "model": model}
        if api_key_env:
            backend["api_key_env"] = api_key_env
    # The config's own backend settings of the same type (batch size, dtype, device, threads,
    # timeouts, tool protocol) still apply; the model and the endpoint, with what
    # authenticates to it (key variable, headers), come from the command line.
    own = (data.get("backends") or {}).get(rollout.get("backend") or "", {})
    backend = swap_model(own, backend)
    rollout["backend"], rollout["n"] = "eval", 1
    rollout["params"] = {**(rollout.get("params") or {}), "temperature": 0.0}
    files = [s for s in data.get("sources") or [] if s.get("type", "file") == "file"]
    source = {**(files[0] if files else {}), "type": "file", "path": str(tasks.resolve())}
    source.pop("limit", None)
    data |= {
        "name": f"eval-{label_of(model)}",
        "backends": {"eval": backend},
        "sources": [source],
        "rollout": rollout,
        "export": [],
    }
    for key in DROPPED:
        data.pop(key, None)
    return RunConfig.model_validate(data)


def swap_model(own: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Backend config `new` (type, model, maybe endpoint) with the settings of `own`, a
    backend config of the same type, kept: batch size, dtype, device, threads, timeouts, tool
    protocol. The endpoint and what authenticates to it are never taken from `own`."""
    if own.get("type") != new["type"]:
        return new
    return {k: v for k, v in own.items() if k not in ENDPOINT} | new


def _calls(t: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for m in t["messages"] for c in (m.get("tool_calls") or [])]


def figures(run_dir: Path) -> dict[str, Any]:
    """The eval figures of a finished eval run folder."""
    from agentmill.records import ExpectedCall
    from agentmill.scoring.tool_call import tool_call_score

    tasks = {
        (t := orjson.loads(line))["id"]: t
        for _, line in iter_jsonl(run_dir / "source" / "records.jsonl")
    }
    src = run_dir / "score" / "records.jsonl"
    if not src.exists():  # a config with no rewards: nothing is scored, success is 0
        src = run_dir / "rollout" / "records.jsonl"
    trajs = [orjson.loads(line) for _, line in iter_jsonl(src)]
    if not trajs:
        raise UserError(f"{run_dir} has no trajectories; did the eval run finish?")
    success = called = calls = malformed = 0
    selection: list[bool] = []
    arguments: list[float] = []
    no_call: list[bool] = []
    for t in trajs:
        success += bool(t.get("rewards")) and min(t["rewards"].values()) >= 1.0
        made = _calls(t)
        called += bool(made)
        calls += len(made)
        bad = sum((c.get("function") or {}).get("arguments") is None for c in made)
        malformed += bad
        expected = (tasks.get(t["task_id"]) or {}).get("expected_calls")
        if expected is None:
            continue
        if not expected:
            no_call.append(not made)
            continue
        names = {(c.get("function") or {}).get("name") for c in made}
        selection.append(not bad and names == {e["name"] for e in expected})
        pairs = [
            (c["function"].get("name"), c["function"].get("arguments"))
            for c in made
            if c.get("function")
        ]
        arguments.append(tool_call_score(pairs, [ExpectedCall(**e) for e in expected]))
    n = len(trajs)
    steps = [float((t.get("agent") or {}).get("steps", 0)) for t in trajs]
    tokens = [float((t.get("usage") or {}).get("completion_tokens", 0)) for t in trajs]
    return {
        "run": str(run_dir),
        "tasks": n,
        "success": proportion(success, n),
        "called": proportion(called, n),
        "well_formed_calls": proportion(calls - malformed, calls),
        "tool_selection": proportion(sum(selection), len(selection)),
        "arguments": mean_ci(arguments),
        "no_call": proportion(sum(no_call), len(no_call)),
        "steps": mean_ci(steps),
        "completion_tokens": mean_ci(tokens),
    }


def evaluate(
    models: list[str],
    tasks: Path,
    out: Path,
    base: RunConfig | None = None,
    base_url: str | None = None,
    api_key_env: str | None = None,
    limit: int | None = None,
    new: bool = False,
) -> dict[str, Any]:
    """Evaluate each model into `out/<label>/`; write and return `out/eval.json`.

    The response cache is not used (a model folder retrained in place must not be answered from
    it); a killed eval resumes from its run folders, and `new` starts fresh ones."""
    from agentmill.pipeline import run
    from agentmill.store import write_atomic

    if not tasks.exists():
        raise UserError(f"tasks file not found: {tasks}")
    labels = [label_of(m) for m in models]
    if len(set(labels)) != len(labels):
        raise UserError(f"two models share the label {labels}; give them distinct folder names")
    results: dict[str, Any] = {}
    for model, label in zip(models, labels, strict=True):
        cfg = eval_config(model, tasks, base, base_url, api_key_env)
        summary = run(cfg, out / label, new=new, limit=limit, no_cache=True, show_progress=False)
        results[label] = {"model": model, "failed": dict(summary.failed)} | figures(out / label)
    report = {"tasks": str(tasks), "models": results}
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "eval.json", orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return report
