"""Multi-hop questions from documents: control flow with the SCRIPTED backend (a fake, not a
model): each check drops with its reason, difficulty comes from known solver outcomes, and
evolution re-checks. The real model runs in test_synth_e2e.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentmill.config import ScriptedBackendConfig
from agentmill.errors import UserError
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.docs import DocSynth
from agentmill.synth.engine import Models, synthesize

DOCS = [
    {
        "id": "ada-vell",
        "title": "Ada Vell",
        "text": "Ada Vell was born in 1841 in Pellam. She founded Vell Clocks.",
    },
    {
        "id": "pellam",
        "title": "Pellam",
        "text": "Pellam is a village on Lake Merrow. Ada Vell was born here.",
    },
]
GOOD = {
    "question": "In which year was the founder of Vell Clocks, a native of the lake village, born?",
    "answer": "1841",
    "supporting_ids": ["ada-vell", "pellam"],
}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in DOCS))
    return path


def gen(**changes) -> str:
    return "Sure!\n```json\n" + json.dumps(GOOD | changes) + "\n```"


def run(
    corpus: Path, generator: list, solver: list[str], judge: list[str] | None = None, **options
):
    """One candidate at a time so each scripted reply stream stays in order."""
    backends = {
        "generator": ScriptedBackendConfig(replies=generator),
        "solver": ScriptedBackendConfig(replies=solver),
    }
    if judge is not None:
        backends["judge"] = ScriptedBackendConfig(replies=judge)
        options["judge"] = "judge"
    options.setdefault("n", 1)
    src = SynthSourceConfig(
        kind="docs",
        corpus=corpus,
        solver="solver",
        min_hops=2,
        max_hops=2,
        max_concurrency=1,
        **options,
    )
    src.bind(backends, cache=False)
    return synthesize(src)


def test_kept_task_has_answer_support_and_difficulty_from_solver_outcomes(corpus) -> None:
    # solver stream: the no-tool answer, then solver_k agent answers (no tool call: one step each)
    solver = ["I am not sure.", "It was 1841.", "Maybe 1850?", "1841", "no idea"]
    outcomes, stats = run(corpus, [gen()], solver, solver_k=4)
    (o,) = outcomes
    assert o.kept, o.detail
    t = o.task
    assert t.ground_truth == "1841" and t.query == GOOD["question"]
    assert t.metadata["difficulty"] == 0.5 and t.metadata["solver_passes"] == "2/4"
    assert t.metadata["too_easy"] is False
    assert sorted(t.metadata["supporting_ids"]) == ["ada-vell", "pellam"]


@pytest.mark.parametrize(
    ("reply", "solver", "reason"),
    [
        ("no json here", ["x"], "unparseable"),
        (json.dumps({"answer": "1841"}), ["x"], "bad_shape"),
        (gen(supporting_ids=["ada-vell", "nowhere"]), ["x"], "unknown_support"),
        (gen(supporting_ids=["ada-vell"]), ["x"], "missing_support"),
        (gen(answer="1902"), ["x"], "unsupported"),
        (gen(question="Was Ada Vell born in 1841?"), ["x"], "answer_leak"),
        (gen(), ["no", "no", "no"], "solver_failed"),
        (
            gen(question="In which town was the engineer who built the lighthouse of Corran born?"),
            ["x"],
            "copied_example",
        ),
    ],
)
def test_each_check_drops_with_its_reason(corpus, reply, solver, reason) -> None:
    outcomes, stats = run(corpus, [reply], solver)
    assert outcomes[0].reason == reason and outcomes[0].detail
    assert stats["dropped"] == {reason: 1}


def test_too_easy_is_kept_marked_or_dropped(corpus) -> None:
    kept, _ = run(corpus, [gen()], ["1841", "1841", "1841"])
    assert kept[0].task.metadata["too_easy"] is True
    dropped, stats = run(corpus, [gen()], ["1841", "1841", "1841"], too_easy="drop")
    assert dropped[0].reason == "too_easy"


def test_judge_confirms_support_when_no_string_match(corpus) -> None:
    answer = "the nineteenth century"
    outcomes, _ = run(
        corpus,
        [gen(answer=answer)],
        ["no", answer],
        judge=['{"result": "GOOD", "reason": "1841 is in it"}'],
        solver_k=1,
    )
    assert outcomes[0].kept
    outcomes, _ = run(
        corpus, [gen(answer=answer)], ["no"], judge=["{'result': 'BAD', 'reason': 'no'}"]
    )
    assert outcomes[0].reason == "unsupported"


def test_evolution_rechecks_each_rewrite(corpus) -> None:
    harder = "In which year was the clockmaker from the village on Lake Merrow born?"
    # accepted: re-checked (no-tool wrong, solver right), the question is replaced
    outcomes, stats = run(
        corpus,
        [gen(), json.dumps({"question": harder})],
        ["no", "1841", "no", "1841"],
        solver_k=1,
        evolve_rounds=1,
    )
    t = outcomes[0].task
    assert t.query == harder and t.metadata["evolved_from"] == [GOOD["question"]]
    assert stats["notes"] == {"evolved": 1}
    # rejected: the rewrite leaks the answer; the checked original is kept
    leaky = json.dumps({"question": "Ada Vell, born 1841: where was she born?"})
    outcomes, stats = run(corpus, [gen(), leaky], ["no", "1841"], solver_k=1, evolve_rounds=2)
    assert outcomes[0].task.query == GOOD["question"]
    assert stats["notes"] == {"evolve_rejected_answer_leak": 1}


def test_chains_follow_links_between_documents(corpus) -> None:
    src = SynthSourceConfig(kind="docs", corpus=corpus, min_hops=2, max_hops=2)
    src.bind({"generator": ScriptedBackendConfig()}, cache=False)
    synth = DocSynth(src, Models(generator=None))  # type: ignore[arg-type]
    chains = {tuple(d.id for d in synth.chain(i)) for i in range(10)}
    assert chains == {("ada-vell", "pellam"), ("pellam", "ada-vell")}


def test_bundled_example_corpus_has_linked_chains() -> None:
    root = Path(__file__).resolve().parents[1]
    src = SynthSourceConfig(
        kind="docs", corpus=root / "examples/data/synth_corpus.jsonl", min_hops=3, max_hops=4
    )
    src.bind({"generator": ScriptedBackendConfig()}, cache=False)
    synth = DocSynth(src, Models(generator=None))  # type: ignore[arg-type]
    assert len(synth.corpus.docs) >= 250
    lengths = [len(synth.chain(i)) for i in range(50)]
    assert min(lengths) >= 3


def test_empty_corpus_is_a_user_error(tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no documents"):
        run(tmp_path / "empty", ["x"], ["x"])
