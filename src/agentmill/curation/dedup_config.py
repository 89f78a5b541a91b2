"""Configs of the dedup, decontamination and balance stages."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agentmill.configbase import Component
from agentmill.records import Task, Trajectory

DedupField = Literal["query", "answer", "text"]
# Built-in balance keys; anything else is a dotted path into the trajectory ("metadata.lang")
# or, with a "task." prefix, into its task ("task.metadata.difficulty").
BALANCE_KEYS = ("tool", "source", "reward", "reward_bucket", "category", "model")


class DedupConfig(Component):
    """Exact and near-duplicate removal on one text field of each trajectory.

    `field`: "query" (last user message before the first assistant turn), "answer" (the final
    answer) or "text" (every message's content and tool-call JSON). Near duplicates are pairs
    whose word `shingle_size`-gram sets have a Jaccard similarity >= `threshold`; MinHash LSH
    proposes candidates (banded so that a pair exactly at `threshold` is proposed with
    probability >= `lsh_recall`) and the exact Jaccard of the shingle sets decides.
    """

    field: DedupField = "query"
    exact: bool = True
    near: bool = True
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    shingle_size: int = Field(default=3, ge=1)
    num_perm: int = Field(default=128, ge=8)
    lsh_recall: float = Field(default=0.995, gt=0.5, lt=1.0)
    seed: int = 0


class EvalFile(Component):
    """One evaluation set: its file, and the name hits are reported under (default: file name)."""

    path: str
    name: str | None = None


def _path_and_name(f: str | EvalFile) -> tuple[str, str]:
    path, name = (f, None) if isinstance(f, str) else (f.path, f.name)
    return path, name or Path(path).name


class DecontamConfig(Component):
    """Drop records that share a word `ngram`-gram with any item of the evaluation files.

    Files: `.jsonl`/`.json` (one object per line; `field`, or the first of question / prompt /
    problem / query / input found), `.parquet` (same field rule), anything else: plain text,
    one item per line. Each entry of `eval_files` is a path or `{path, name}`; relative paths
    are from the working directory. Eval items shorter than `ngram` words are matched whole
    when they have at least `min_words` words. `scope`: "query" checks the task's query only,
    "user" every user turn.
    """

    eval_files: list[str | EvalFile] = Field(min_length=1)
    field: str | None = None
    ngram: int = Field(default=13, ge=1)
    min_words: int = Field(default=8, ge=1)
    scope: Literal["query", "user"] = "user"

    @field_validator("eval_files")
    @classmethod
    def _files_exist(cls, v: list[str | EvalFile]) -> list[str | EvalFile]:
        names: set[str] = set()
        for path, name in map(_path_and_name, v):
            if not Path(path).is_file():
                raise ValueError(f"eval file not found: {path}; fix the path or remove it")
            if name in names:
                raise ValueError(
                    f"two eval files are named {name!r}; give each a name ({{path, name}}, "
                    "or FILE:NAME on the command line)"
                )
            names.add(name)
        return v

    def sets(self) -> list[tuple[str, str]]:
        """(path, name) of each eval file; names default to the file name.

        >>> import tempfile, pathlib
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "qa.txt"
        >>> _ = f.write_text("one question")
        >>> cfg = DecontamConfig(eval_files=[str(f), {"path": str(f), "name": "x"}])
        >>> [name for _, name in cfg.sets()]
        ['qa.txt', 'x']
        """
        return [_path_and_name(f) for f in self.eval_files]


class BalanceConfig(Component):
    """Cap or resample records per key to a target mix.

    `key`: a built-in: "tool" (first tool called, or "none"), "source", "reward" (alias
    "reward_bucket": mean reward rounded to 0.25), "category" (the trajectory's or else its
    task's `metadata.category`), "model"; or a dotted path into the trajectory
    ("metadata.lang", "provenance.file") or, prefixed "task.", into its task
    ("task.metadata.difficulty"). `mode: cap` keeps at most `cap` per key; `mode: proportions`
    downsamples (seeded) to the fractions in `proportions` (keys not listed are dropped), and
    upsamples with replacement only when `allow_upsample`. `max_total` (proportions only)
    bounds the records drawn in all, the mix kept: e.g. a training set that grows round after
    round (a flywheel's `accumulate`) but whose training time should not.
    """

    key: str = "source"
    mode: Literal["cap", "proportions"] = "cap"
    cap: int | None = Field(default=None, ge=0)
    proportions: dict[str, float] = Field(default_factory=dict)
    allow_upsample: bool = False
    max_total: int | None = Field(default=None, ge=1)
    seed: int = 0

    @field_validator("key")
    @classmethod
    def _known_key(cls, v: str) -> str:
        head, _, rest = v.partition(".")
        if v in BALANCE_KEYS or head in Trajectory.model_fields:
            return v
        if head == "task" and rest.partition(".")[0] in Task.model_fields:
            return v
        raise ValueError(
            f"unknown balance key {v!r}; use one of {', '.join(BALANCE_KEYS)}, a dotted path "
            "into the trajectory (metadata.NAME) or into its task (task.metadata.NAME)"
        )

    @model_validator(mode="after")
    def _target_set(self) -> BalanceConfig:
        if self.mode == "cap" and self.cap is None:
            raise ValueError(
                "mode cap needs cap (most records per key); set cap, or use "
                "mode: proportions with proportions"
            )
        if self.mode == "proportions" and not self.proportions:
            raise ValueError(
                "mode proportions needs proportions ({key: fraction}); set them, "
                "or use mode: cap with cap"
            )
        if self.mode == "cap" and self.max_total is not None:
            raise ValueError(
                "max_total applies to mode: proportions; remove it, or lower cap (the most "
                "records per key)"
            )
        return self
