"""Multi-hop questions from documents: a chain of 2-4 linked documents, one question that needs
them all, checked before it is kept.

Candidate `i` samples a seed document, then follows links to build a chain: documents whose
title the last one mentions (shared entities), else its BM25 neighbours (the `search` tool's
index). The generator writes `{question, answer, supporting_ids}`; the candidate must pass:

1. parse (`unparseable`, `bad_shape`); every id is a corpus id (`unknown_support`) and every
   chain document is cited (`missing_support`)
2. support: the normalized answer occurs in the cited documents, else the judge (when
   configured) says they support it (`unsupported`, `judge_error`)
3. no leak: the answer does not occur in the question (`answer_leak`)
4. no-tool pass: the solver answers without tools; right means "too easy" (kept with
   `too_easy: true`, or dropped as `too_easy` when `too_easy: drop`)
5. solver pass: the agent loop with `search`/`open` over the same corpus reaches the answer
   in at least one of `solver_k` samples (`solver_failed`)

`difficulty` on the task is the solver's pass rate (1.0: every sample reached the answer;
lower is harder). Evolution rounds ask the generator for a harder rewrite of a kept question
(same answer) and re-check it (3-5); a rewrite that fails keeps the previous version and is
counted in the stats notes as `evolve_rejected_<reason>`.

>>> mentions("It was founded in 1,138 by Ada Vell.", "ada vell"), mentions("Pellamy", "Pellam")
(True, False)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from agentmill.curation.dedup import normalize
from agentmill.records import Message, Task
from agentmill.rollout.agent import Agent
from agentmill.rollout.configs import AgentConfig, SearchToolConfig
from agentmill.rollout.tools import build_tools
from agentmill.rollout.tools.search import Document, load_corpus
from agentmill.scoring.judge import parse_verdict
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.engine import Models, Outcome, ask, drop, generate, unparseable

SYSTEM = (
    "You write research questions that need several documents to answer. Reply with ONE JSON "
    'object and nothing else: {"question": "...", "answer": "<a few words>", '
    '"supporting_ids": ["<document id>", ...]}'
)
EVOLVE_SYSTEM = (
    "You make research questions harder without changing their answer: add a constraint, "
    "describe an entity instead of naming it, or add a step through another fact. Reply with "
    'ONE JSON object and nothing else: {"question": "..."}'
)
_STR = {"type": "string"}


def question_schema(ids: list[str]) -> dict[str, Any]:
    """The forced `submit` tool's parameters: supporting ids are the chain's, each cited."""
    cited = {"type": "array", "items": {"enum": ids}, "minItems": len(ids), "maxItems": len(ids)}
    properties = {"question": _STR, "answer": _STR, "supporting_ids": cited}
    return {"type": "object", "properties": properties, "required": list(properties)}


EVOLVE_SCHEMA = {"type": "object", "properties": {"question": _STR}, "required": ["question"]}
# The worked exchanges shown before each request (small models follow an example best).
DEMO_CHAIN = [
    Document(
        "harbour-light",
        "Harbour Light",
        "The Harbour Light is a lighthouse in Corran, built in 1872 by the engineer Mara Quist.",
    ),
    Document("mara-quist", "Mara Quist", "Mara Quist was an engineer born in Dunmore."),
]
DEMO_REPLY = {
    "question": "In which town was the engineer who built the lighthouse of Corran born?",
    "answer": "Dunmore",
    "supporting_ids": ["harbour-light", "mara-quist"],
}
EVOLVE_SHOT = (
    f"Question: {DEMO_REPLY['question']}\nAnswer (must stay the same): Dunmore",
    {"question": "Where was the engineer behind a 19th-century lighthouse of Corran born?"},
)
SUPPORT_SYSTEM = (
    "You check whether documents support an answer to a question. Reply with one JSON object: "
    '{"reason": "<one sentence>", "result": "GOOD if the documents support the answer, else BAD"}'
)
SOLVER_SYSTEM = (
    "Answer the question. Search the documents with the search tool, open the relevant ones, "
    "then reply with only the short answer."
)
NO_TOOL_SYSTEM = "Answer the question with only the short answer."


def mentions(text: str, answer: str) -> bool:
    """The normalized `answer` occurs in the normalized `text` as whole words."""
    a, t = normalize(str(answer)), normalize(text)
    return bool(a) and re.search(rf"(?<!\w){re.escape(a)}(?!\w)", t) is not None


@dataclass
class Candidate:
    """A parsed generator reply, with the chain it was written from."""

    question: str
    answer: str
    support: list[str]
    chain: list[str]
    notes: dict[str, Any] = field(default_factory=dict)

    def shown(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.answer,
            "supporting_ids": self.support,
            "chain": self.chain,
        }


def read_candidate(obj: dict[str, Any], chain: list[str]) -> Candidate | str:
    """The candidate, or what is wrong with the generator's object."""
    q, a, ids = obj.get("question"), obj.get("answer"), obj.get("supporting_ids") or []
    if isinstance(ids, str):
        ids = [ids]
    if not isinstance(q, str) or not q.strip():
        return "no `question` string"
    if not isinstance(a, str | int | float) or not str(a).strip():
        return "no short `answer`"
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        return "`supporting_ids` must be a list of document ids"
    return Candidate(q.strip(), str(a).strip(), [i.strip("[] ") for i in ids], chain)


class DocSynth:
    """The docs synthesizer of one `synth` source."""

    def __init__(self, src: SynthSourceConfig, models: Models) -> None:
        self.src, self.models = src, models
        self.corpus = load_corpus(src.corpus)  # UserError: missing or empty corpus
        self.seed = src._context.get("seed", 0)
        self._links: dict[str, list[Document]] = {}
        self._titles = [(normalize(d.title), d) for d in self.corpus.docs if normalize(d.title)]
        bcfg = src._context["backends"][src.solver or src.generator]
        self.text_protocol = getattr(bcfg, "tool_protocol", "native") == "text"
        self.search_tools = build_tools([SearchToolConfig(corpus=src.corpus)])

    # ------------------------------------------------------------ chains
    def linked(self, doc: Document) -> list[Document]:
        """Documents whose title `doc` mentions (shared entities), in corpus order."""
        if doc.id not in self._links:
            text = f" {normalize(doc.text)} "
            self._links[doc.id] = [
                d for title, d in self._titles if d.id != doc.id and f" {title} " in text
            ]
        return self._links[doc.id]

    def neighbours(self, doc: Document, k: int = 6) -> list[Document]:
        hits = self.corpus.search(f"{doc.title} {doc.text[:400]}", k + 1)
        return [d for d, _ in hits if d.id != doc.id]

    def chain(self, index: int) -> list[Document]:
        """A seeded chain of `min_hops`..`max_hops` linked documents (shorter if links run out)."""
        rng = random.Random(f"{self.seed}:{index}")
        chain = [rng.choice(self.corpus.docs)]
        for _ in range(rng.randint(self.src.min_hops, self.src.max_hops) - 1):
            seen = {d.id for d in chain}
            options = [d for d in self.linked(chain[-1]) if d.id not in seen]
            options = options or [d for d in self.neighbours(chain[-1]) if d.id not in seen]
            if not options:
                break
            chain.append(rng.choice(options[:5]))
        return chain

    def prompt(self, chain: list[Document]) -> str:
        cut = self.src.doc_chars
        docs = [f"[{d.id}] {d.title}\n{d.text[:cut]}" for d in chain]
        return (
            "Documents:\n\n" + "\n\n".join(docs) + f"\n\nWrite one question whose answer needs "
            f"ALL {len(chain)} documents above (combine a fact from each). The answer must be "
            "short (a name, number or date), appear in the documents, and not appear in the "
            "question. List the ids of the documents it needs in supporting_ids."
        )

    # ------------------------------------------------------------ one candidate
    async def candidate(self, index: int) -> Outcome:
        chain = self.chain(index)
        ids = [d.id for d in chain]
        if len(chain) < self.src.min_hops:
            return drop(index, "no_chain", f"only {len(chain)} linked document(s)", chain=ids)
        prompt, shot = (SYSTEM, self.prompt(chain)), (self.prompt(DEMO_CHAIN), DEMO_REPLY)
        key = f"synth-docs#{index}"
        gen = self.models.generator
        schema = question_schema(ids)
        obj, text = await generate(gen, self.src, prompt, schema, key, index, shot)
        if obj is None:
            return unparseable(index, text, chain=ids)
        cand = read_candidate(obj, ids)
        if isinstance(cand, str):
            return drop(index, "bad_shape", cand, chain=ids, generated=obj)
        return await self.check(index, cand)

    async def check(self, index: int, cand: Candidate) -> Outcome:
        if normalize(cand.question) == normalize(DEMO_REPLY["question"]):
            return drop(index, "copied_example", "the worked example's question", **cand.shown())
        problem = self.support_problem(cand) or await self.judged_support(index, cand)
        if problem:
            return drop(index, problem[0], problem[1], **cand.shown())
        problem = await self.hardness_problem(index, cand, cand.question)
        if problem:
            return drop(index, problem[0], problem[1], **cand.shown())
        outcome = Outcome(index)
        await self.evolve(index, cand, outcome)
        outcome.task = self.task(index, cand)
        return outcome

    def support_problem(self, cand: Candidate) -> tuple[str, str] | None:
        unknown = [i for i in cand.support if self.corpus.find(i) is None]
        if unknown:
            return "unknown_support", f"no document with id {unknown[0]!r}"
        cited = {self.corpus.find(i).id for i in cand.support}  # type: ignore[union-attr]
        missing = [i for i in cand.chain if i not in cited]
        if missing:
            return "missing_support", f"the question does not cite {', '.join(missing)}"
        return None

    async def judged_support(self, index: int, cand: Candidate) -> tuple[str, str] | None:
        docs = [self.corpus.find(i) for i in cand.support]
        if any(mentions(d.text, cand.answer) or mentions(d.title, cand.answer) for d in docs if d):
            return None
        if self.models.judge is None:
            return "unsupported", f"{cand.answer!r} occurs in none of the cited documents"
        shown = "\n\n".join(f"[{d.id}] {d.title}\n{d.text}" for d in docs if d)
        user = f"## Documents\n{shown}\n\n## Question\n{cand.question}\n\n## Answer\n{cand.answer}"
        params = self.src.params.model_copy(update={"temperature": 0.0, "max_tokens": 256})
        text = await ask(
            self.models.judge, SUPPORT_SYSTEM, user, params, f"synth-docs-judge#{index}"
        )
        verdict, reason = parse_verdict(text)
        if verdict == "GOOD":
            return None
        return ("unsupported" if verdict == "BAD" else "judge_error"), reason

    async def hardness_problem(
        self, index: int, cand: Candidate, question: str
    ) -> tuple[str, str] | None:
        """Checks 3-5 on `question`; stores too_easy and difficulty in `cand.notes`."""
        if mentions(question, cand.answer):
            return "answer_leak", f"the question contains the answer {cand.answer!r}"
        too_easy = False
        if self.src.no_tool_check:
            too_easy = await self.no_tool(index, question, cand.answer)
            if too_easy and self.src.too_easy == "drop":
                return "too_easy", "answered right without any tool"
        passes = await self.solve(index, question, cand.answer)
        if not any(passes):
            return "solver_failed", f"0 of {len(passes)} solver samples reached {cand.answer!r}"
        cand.notes.update(too_easy=too_easy, difficulty=round(sum(passes) / len(passes), 4))
        cand.notes["solver_passes"] = f"{sum(passes)}/{len(passes)}"
        return None

    async def solve(self, index: int, question: str, answer: str) -> list[bool]:
        agent = Agent(
            backend=self.models.solver,
            tools=self.search_tools,
            cfg=AgentConfig(max_steps=self.src.solver_max_steps, max_wall_s=600.0),
            params=self.src.solver_params,
            text_protocol=self.text_protocol,
        )
        prompt = [
            Message(role="system", content=SOLVER_SYSTEM),
            Message(role="user", content=question),
        ]
        passes = []
        for k in range(self.src.solver_k):
            r = await agent.run(prompt, sample_index=k, key=f"synth-docs-solve#{index}")
            passes.append(mentions(r.final_answer or "", answer))
        return passes

    async def no_tool(self, index: int, question: str, answer: str) -> bool:
        params = self.src.solver_params.model_copy(update={"temperature": 0.0})
        text = await ask(
            self.models.solver, NO_TOOL_SYSTEM, question, params, f"synth-docs-notool#{index}"
        )  # type: ignore[arg-type]
        return mentions(text, answer)

    async def evolve(self, index: int, cand: Candidate, outcome: Outcome) -> None:
        """Up to `evolve_rounds` harder rewrites, each re-checked; a failed one ends the rounds."""
        for r in range(1, self.src.evolve_rounds + 1):
            user = f"Question: {cand.question}\nAnswer (must stay the same): {cand.answer}"
            key = f"synth-docs-evolve#{index}.{r}"
            prompt = (EVOLVE_SYSTEM, user)
            gen = self.models.generator
            obj, _ = await generate(gen, self.src, prompt, EVOLVE_SCHEMA, key, index, EVOLVE_SHOT)
            question = obj.get("question") if obj else None
            if not isinstance(question, str) or not question.strip():
                outcome.notes["evolve_rejected_unparseable"] += 1
                return
            saved = dict(cand.notes)
            problem = await self.hardness_problem(index, cand, question.strip())
            if problem:
                cand.notes = saved
                outcome.notes[f"evolve_rejected_{problem[0]}"] += 1
                return
            cand.notes["evolved_from"] = [*saved.get("evolved_from", []), cand.question]
            cand.question = question.strip()
            outcome.notes["evolved"] += 1

    def task(self, index: int, cand: Candidate) -> Task:
        metadata = {
            "synth": "docs",
            "synth_index": index,
            "supporting_ids": cand.chain,
            **cand.notes,
        }
        return Task.create(cand.question, ground_truth=cand.answer, metadata=metadata)
