"""`agentmill flywheel CONFIG --rounds N`: sample, verify, filter, train, evaluate; repeat.

    name: fw
    run: quickstart.yaml            # a run config: sources, teacher backend, tools, rewards, filter
    student: smollm2-135m           # the model trained (round 1 starts from it)
    eval_tasks: data/held_out.jsonl # held-out tasks, evaluated with the run config's agent
    train: {method: sft, max_steps: 50, learning_rate: 1e-4}   # `agentmill train` options
    resample_with_student: false    # true: round k samples with round k-1's model
    feedback: feedback.yaml         # optional: a feedback run (traces -> judge -> tasks_out)
                                    # first; its kept tasks replace the run config's sources
    eval_run: eval.yaml             # optional: the agent the evals use (default: run's), e.g.
                                    # sample forced calls, evaluate the unforced prompt

Paths are relative to the config file. Everything lands in `runs/<name>/` (or `--out`):

    feedback/           with `feedback:`, the feedback run whose kept tasks every round uses
    ledger.jsonl        one line per finished round: round 0 is the base student's eval (and
                        the feedback run's verdicts); then
                        the sampler, the run's funnel, the training data (path, sha256, records),
                        the model folder, the train figures, the eval figures, the config hash
    round-K/run/        the round's pipeline run (its export/train.jsonl is the training data)
    round-K/model/      `agentmill train` output (train.json marks it finished)
    round-K/eval/       `agentmill eval` output (eval.json)

Each step goes through the public APIs (`pipeline.run`, `train.trainer.train`,
`evaluation.evaluate`), so a killed flywheel resumes at the step it was in: the run resumes
from its records, a finished training is not repeated, the eval resumes from its run folder,
and a round already in the ledger is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from pydantic import Field, ValidationError

from agentmill.configbase import Component
from agentmill.errors import UserError
from agentmill.records import content_hash
from agentmill.store import JsonlWriter, iter_jsonl

LEDGER = "ledger.jsonl"
EXPORT_FORMAT = {"sft": "trl-sft", "dpo": "trl-dpo", "grpo": "trl-grpo"}


class FlywheelConfig(Component):
    name: str = "flywheel"
    run: Path
    student: str
    eval_tasks: Path
    train: dict[str, Any] = Field(default_factory=lambda: {"method": "sft"})
    resample_with_student: bool = False
    # Round k's data also draws on the records rounds 1..k-1 kept (their filter output, joined
    # before round k's filter, judge and curation): what an earlier sampler verified stays in
    # the data even when a later sampler no longer gets it right. Set the run's
    # `balance.max_total` to keep the training set (and time) from growing with the rounds.
    accumulate: bool = False
    # A feedback run (trace source, judge, tasks_out): run first, its kept tasks become the
    # tasks every round re-runs the agent on (docs/feedback.md, docs/train.md).
    feedback: Path | None = None
    # The run config whose agent, tools and rewards the evals use (default: `run`). E.g. the
    # run samples with `first_tool_choice: required` and the eval measures the plain prompt.
    eval_run: Path | None = None


def load_flywheel(path: Path) -> FlywheelConfig:
    if not path.exists():
        raise UserError(f"flywheel config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        cfg = FlywheelConfig.model_validate(raw)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({type(e).__name__})") from None
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise UserError(f"flywheel config {path}: {where}: {err['msg']}") from None
    base = path.parent
    student = cfg.student
    if (base / student).is_dir():
        student = str((base / student).resolve())
    return cfg.model_copy(
        update={
            "feedback": (base / cfg.feedback).resolve() if cfg.feedback else None,
            "eval_run": (base / cfg.eval_run).resolve() if cfg.eval_run else None,
            "run": (base / cfg.run).resolve(),
            "eval_tasks": (base / cfg.eval_tasks).resolve(),
            "student": student,
        }
    )


def _ledger(root: Path) -> dict[int, dict[str, Any]]:
    return {(r := orjson.loads(line))["round"]: r for _, line in iter_jsonl(root / LEDGER)}


def _round_config(
    fw: FlywheelConfig,
    k: int,
    sampler: str | None,
    tasks: Path | None = None,
    carry: list[Path] | None = None,
) -> Any:
    """The round's run config: the user's, with the training export, maybe the student as
    the sampler and the earlier rounds' runs to carry kept records from."""
    from agentmill.config import RunConfig
    from agentmill.configfile import load_config
    from agentmill.evaluation import swap_model
    from agentmill.train.trainer import TrainOptions

    method = TrainOptions(**fw.train).method
    data = load_config(fw.run).model_dump(mode="json", exclude_none=True)
    data["name"] = f"{fw.name}-round-{k}"
    # Each round its own seed: fresh samples past the response cache, its own trajectory ids.
    data["seed"] = data.get("seed", 0) + k - 1
    data["export"] = [{"format": EXPORT_FORMAT[method], "path": "train.jsonl"}]
    if tasks is not None:  # the feedback run's kept tasks replace the run config's sources
        data["sources"] = [{"type": "file", "path": str(tasks)}]
    if carry:
        data["carry"] = [*data.get("carry", []), *(str(p) for p in carry)]
    if sampler is not None:
        own = data["backends"].get(data["rollout"].get("backend", "teacher"), {})
        student = swap_model(own, {"type": "local", "model": sampler})  # the teacher's dtype, ...
        data["backends"] = {**data["backends"], "student": student}
        data["rollout"] = {**data["rollout"], "backend": "student"}
    return RunConfig.model_validate(data)


def flywheel(config: Path, rounds: int, out: Path | None = None) -> list[dict[str, Any]]:
    """Run (or resume) `rounds` rounds; returns the ledger, round 0 first."""
    from agentmill.configfile import load_config
    from agentmill.evaluation import evaluate
    from agentmill.pipeline import run
    from agentmill.train.trainer import TrainOptions, data_sha256, train

    fw = load_flywheel(config)
    opts = TrainOptions(**fw.train)  # refused here, before any work, when wrong
    eval_base = load_config(fw.eval_run or fw.run)
    root = out or Path("runs") / fw.name
    root.mkdir(parents=True, exist_ok=True)
    done = _ledger(root)
    ledger = JsonlWriter(root / LEDGER)
    cfg_hash = content_hash([fw.model_dump(mode="json"), eval_base.model_dump(mode="json")])
    try:
        tasks, feedback = _feedback(fw, root) if fw.feedback else (None, None)
        if 0 not in done:  # the base student, the reference every round is measured against
            ev = evaluate([fw.student], fw.eval_tasks, root / "round-0" / "eval", eval_base)
            done[0] = {"round": 0, "model": fw.student, "eval": _only(ev), "config": cfg_hash}
            if feedback is not None:
                done[0]["feedback"] = feedback
            ledger.append(orjson.dumps(done[0]))
        for k in range(1, rounds + 1):
            if k in done:
                continue
            prev = done[k - 1]["model"]
            sampler = prev if fw.resample_with_student and k > 1 else None
            rdir = root / f"round-{k}"
            carry = [root / f"round-{j}" / "run" for j in range(1, k)] if fw.accumulate else []
            cfg = _round_config(fw, k, sampler, tasks, carry)
            summary = run(cfg, rdir / "run", show_progress=False)
            if summary.failed:
                raise UserError(
                    f"round {k}: {sum(summary.failed.values())} trajectories failed "
                    f"({', '.join(summary.failed)}); re-run the same command to retry them"
                )
            data = rdir / "run" / "export" / "train.jsonl"
            if not data.exists() or data.stat().st_size == 0:
                raise UserError(
                    f"round {k}: the run kept no training data ({data}); loosen the filter, "
                    "raise rollout.n or change the tasks"
                )
            model_dir = rdir / "model"
            if not (model_dir / "train.json").exists():
                train(data, prev, model_dir, opts)
            trained = orjson.loads((model_dir / "train.json").read_bytes())
            ev = evaluate([str(model_dir)], fw.eval_tasks, rdir / "eval", eval_base)
            manifest = orjson.loads((rdir / "run" / "manifest.json").read_bytes())
            done[k] = {
                "round": k,
                "sampler": sampler or "teacher",
                "funnel": manifest.get("stages", {}).get("funnel", {}),
                "data": {
                    "path": str(data),
                    "sha256": data_sha256(data),
                    "records": trained["records"],
                },
                "model": str(model_dir),
                "train": {x: trained[x] for x in ("steps", "first_loss", "last_loss", "seconds")},
                "eval": _only(ev),
                "config": cfg_hash,
            }
            ledger.append(orjson.dumps(done[k]))
    finally:
        ledger.close()
    return [done[k] for k in sorted(done)]


def _feedback(fw: FlywheelConfig, root: Path) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) the feedback run; its kept tasks file and what it did."""
    from agentmill.configfile import load_config
    from agentmill.pipeline import run
    from agentmill.sources.traces import tasks_path

    assert fw.feedback is not None
    cfg = load_config(fw.feedback)
    if cfg.tasks_out is None:
        raise UserError(
            f"flywheel feedback config {fw.feedback} has no tasks_out; add "
            "tasks_out: {path: '{run}/tasks.jsonl'} so its kept tasks can be re-run"
        )
    out = root / "feedback"
    summary = run(cfg, out, show_progress=False)
    tasks = tasks_path(cfg.tasks_out.path, out)
    if summary.failed or not tasks.exists() or tasks.stat().st_size == 0:
        raise UserError(
            f"the feedback run {out} kept no tasks ({dict(summary.failed) or 'none judged GOOD'}); "
            "check its judge and re-run the same command"
        )
    funnel = orjson.loads((out / "manifest.json").read_bytes())["stages"].get("funnel", {})
    return tasks, {"run": str(out), "tasks": str(tasks), "judged": funnel.get("judged", {})}


def _only(report: dict[str, Any]) -> dict[str, Any]:
    """The figures of the one model an eval report holds."""
    (figs,) = report["models"].values()
    return figs
