"""Configs of the dedup, decontamination and balance stages."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from agentmill.configbase import Component

DedupField = Literal["query", "answer", "text"]


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


class DecontamConfig(Component):
    """Drop records that share a word `ngram`-gram with any item of the evaluation files.

    Files: `.jsonl`/`.json` (one object per line; `field`, or the first of question / prompt /
    problem / query / input found), `.parquet` (same field rule), anything else: plain text,
    one item per line. Eval items shorter than `ngram` words are matched whole when they have
    at least `min_words` words. `scope`: "query" checks the task's query only, "user" every
    user turn.
    """

    eval_files: list[str] = Field(default_factory=list)
    field: str | None = None
    ngram: int = Field(default=13, ge=1)
    min_words: int = Field(default=8, ge=1)
    scope: Literal["query", "user"] = "user"


class BalanceConfig(Component):
    """Cap or resample records per key to a target mix.

    `key`: a dotted path into the record ("metadata.category", "provenance.source") or a
    built-in: "tool" (first tool called, or "none"), "source", "reward_bucket" (mean reward
    rounded to 0.25), "model". `mode: cap` keeps at most `cap` per key; `mode: proportions`
    downsamples (seeded) to the fractions in `proportions` (keys not listed are dropped), and
    upsamples with replacement only when `allow_upsample`.
    """

    key: str = "source"
    mode: Literal["cap", "proportions"] = "cap"
    cap: int | None = Field(default=None, ge=0)
    proportions: dict[str, float] = Field(default_factory=dict)
    allow_upsample: bool = False
    seed: int = 0
