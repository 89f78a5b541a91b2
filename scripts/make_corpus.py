"""Write the bundled synth example corpus: about 300 short articles about an invented country,
linked by the names they mention (people born in towns, companies founded by people, rivers
through towns...), so multi-hop questions have chains to follow. Deterministic: the same
file on every run; nothing is downloaded.

.venv/bin/python scripts/make_corpus.py            # writes examples/data/synth_corpus.jsonl
.venv/bin/python scripts/make_corpus.py --check    # exit 1 if the file is stale
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "examples" / "data" / "synth_corpus.jsonl"
ONSETS = [
    "b",
    "br",
    "c",
    "d",
    "dr",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "st",
    "t",
    "v",
    "w",
]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "oa"]
CODAS = ["", "n", "l", "r", "s", "th", "m", "nd", "rk", "ll"]
PROFESSIONS = [
    "engineer",
    "painter",
    "botanist",
    "novelist",
    "architect",
    "cartographer",
    "chemist",
    "composer",
]
PRODUCTS = [
    "clocks",
    "bicycles",
    "paper",
    "glassware",
    "telescopes",
    "woollen cloth",
    "ferries",
    "pianos",
]
MONTHS = ["March", "April", "May", "June", "July", "August", "September", "October"]
SEAS = ["the Grey Sea", "the Amber Sea", "the Northern Sound"]


class Names:
    """Unique invented names from syllables."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.used = rng, set()

    def word(self, syllables: int = 2) -> str:
        while True:
            w = "".join(self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(syllables))
            w = (w + self.rng.choice(CODAS)).capitalize()
            if w not in self.used and len(w) > 3:
                self.used.add(w)
                return w


def build(seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    names = Names(rng)
    regions = [f"{names.word()} Province" for _ in range(8)]
    towns = [names.word() for _ in range(70)]
    rivers = [f"{names.word()} River" for _ in range(20)]
    mountains = [f"Mount {names.word()}" for _ in range(20)]
    people = [f"{names.word(1)} {names.word()}" for _ in range(100)]
    companies = [f"{names.word()} {rng.choice(['Works', 'Company', 'Mills'])}" for _ in range(50)]
    festivals = [f"{names.word()} Festival" for _ in range(30)]
    town_region = {t: rng.choice(regions) for t in towns}
    town_river = {t: rng.choice(rivers) for t in towns}
    born = {p: (rng.choice(towns), rng.randint(1780, 1960)) for p in people}
    founder = {c: rng.choice(people) for c in companies}
    docs = []
    for r in regions:
        mine = [t for t in towns if town_region[t] == r]
        capital = mine[0] if mine else rng.choice(towns)
        docs.append(
            _doc(
                r,
                f"{r} is a province in the north of the country. Its capital is {capital}. "
                f"Other towns include {', '.join(mine[1:4]) or 'a few villages'}. "
                f"It has about {rng.randint(80, 900)} thousand inhabitants.",
            )
        )
    for t in towns:
        twin = rng.choice([x for x in towns if x != t])
        docs.append(
            _doc(
                t,
                f"{t} is a town in {town_region[t]} on the {town_river[t]}. It was founded in "
                f"{rng.randint(900, 1700)} and has a population of {rng.randint(2, 180) * 1000}. "
                f"It is twinned with {twin}.",
            )
        )
    for r in rivers:
        through = [t for t in towns if town_river[t] == r][:3]
        source = rng.choice(mountains)
        docs.append(
            _doc(
                r,
                f"The {r} is {rng.randint(30, 420)} kilometres long. It rises on {source} and "
                f"flows into {rng.choice(SEAS)}. Towns on its banks include "
                f"{', '.join(through) or 'no large towns'}.",
            )
        )
    for m in mountains:
        climber, year = rng.choice(people), rng.randint(1820, 1970)
        docs.append(
            _doc(
                m,
                f"{m} is a peak of {rng.randint(1200, 4100)} metres in {rng.choice(regions)}. "
                f"It was first climbed in {year} by {climber}.",
            )
        )
    for p in people:
        town, year = born[p]
        made = [c for c in companies if founder[c] == p]
        extra = (
            f" In {year + rng.randint(22, 45)} {p.split()[0]} founded {made[0]}." if made else ""
        )
        docs.append(
            _doc(
                p,
                f"{p} (born {year} in {town}) was a {rng.choice(PROFESSIONS)}.{extra} "
                f"{p.split()[0]} is buried in {rng.choice(towns)}.",
            )
        )
    for c in companies:
        f = founder[c]
        docs.append(
            _doc(
                c,
                f"{c} is a maker of {rng.choice(PRODUCTS)} founded by {f}. Its headquarters "
                f"are in {rng.choice(towns)} and it employs {rng.randint(40, 9000)} people.",
            )
        )
    for fe in festivals:
        docs.append(
            _doc(
                fe,
                f"The {fe} is held every {rng.choice(MONTHS)} in {rng.choice(towns)}. It was "
                f"started in {rng.randint(1850, 2010)} by {rng.choice(people)} and draws about "
                f"{rng.randint(2, 90)} thousand visitors.",
            )
        )
    return docs


def _doc(title: str, text: str) -> dict[str, str]:
    return {"id": title.lower().replace(" ", "-"), "title": title, "text": text}


def render() -> str:
    return "".join(json.dumps(d) + "\n" for d in build())


if __name__ == "__main__":
    text = render()
    if "--check" in sys.argv:
        sys.exit(0 if OUT.exists() and OUT.read_text() == text else 1)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT} ({text.count(chr(10))} articles)")
