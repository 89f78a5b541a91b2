"""Studio ingest speed and memory against the raw floor of reading the same rows.

    .venv/bin/python bench/ingest_studio.py                  # 200,000 spans (and 100,000)
    .venv/bin/python bench/ingest_studio.py --spans 20000    # quick
    .venv/bin/python bench/ingest_studio.py --json bench-ingest-studio.json

Generates a new-layout AgentScope Studio database (agentscope 1.0.12 GenAI spans, stored as
Studio's span processor stores them, by tests/studio_db.py) of `--spans` spans and one of half
that size. Runs are 1-3 turns; a turn is an agent span plus 3-7 chat/tool spans (1-3 tool
rounds, sometimes two parallel calls), with a ~1.5 KB system prompt, user messages of
200-600 characters, tool results of 300-2,000 characters, and every chat span carrying the
full prompt (so later turns carry more). Format spans are left out (Studio files them under
'unknown', which the ingester skips without reading them).

Each measurement runs in a fresh child process:
- floor: `SELECT` the same columns the ingester reads, in table order, and `orjson.loads`
  every row's attributes; nothing else (the least any reader must do);
- ingest: `read_trace_dicts("agentscope-studio", ...)` over the whole file: every trajectory
  built as the canonical dict `agentmill ingest` writes (nothing serialized or written);
- peak RSS (`ru_maxrss`) of the child, and the Python heap peak under tracemalloc (a second,
  slower pass), on the full and the half-size file: memory must not grow with the file;
- where the ingest's CPU goes: reading the rows into `Span`s (`studio.read_spans`, which
  includes the floor's work) and checking the same records into their canonical dicts
  (`canonical.trajectory_dict`), as shares of the ingest; the rest is the rebuild itself.
  `ceiling_fraction` is the floor over reading + checking: the fraction a rebuild costing
  nothing would reach;
- what skipping the prompts a rebuild never uses could save: every chat span carries the
  whole prompt so far and only the last of a turn is used; `share_unused_prompts` is the CPU
  to decode the others (the most that not decoding them saves), and `chat_whole_us` /
  `chat_slim_us` the cost per chat span of reading its attributes whole or with the prompt
  cut out by SQLite's JSON functions (what not decoding them would cost instead).

Rates are spans per CPU second of the child (the machine is shared: CPU time is steadier
than wall time); each figure is the best of `--repeats` runs.

    .venv/bin/python bench/ingest_studio.py --workers 2 --dir /tmp/bench-studio

measures instead the whole command (`ingest ... -o OUT --tasks-out TASKS`, files written)
serially and with worker processes (ingest/parallel.py) against the floor, by WALL time
(workers spread the CPU over cores), with the parent's and workers' CPU and peak RSS; run it
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import studio_db as sdb  # noqa: E402

WORDS = [
    "agent",
    "tool",
    "model",
    "query",
    "result",
    "data",
    "search",
    "answer",
    "table",
    "index",
    "value",
    "step",
]


def _text(rng: random.Random, lo: int, hi: int) -> str:
    n = rng.randint(lo, hi)
    out, size = [], 0
    while size < n:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n]


def _turn(rng: random.Random) -> sdb.Turn:
    steps = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        calls = [
            sdb.Call(
                rng.choice(("search", "calc")),
                {"query": _text(rng, 20, 80)},
                _text(rng, 300, 2000),
            )
            for _ in range(rng.choice((1, 1, 1, 2)))
        ]
        steps.append(sdb.Step(_text(rng, 50, 300), calls, usage=(rng.randint(500, 4000), 80)))
    steps.append(sdb.Step(_text(rng, 100, 400), usage=(rng.randint(500, 4000), 120)))
    return sdb.Turn(user=_text(rng, 200, 600), steps=steps)


def generate(path: Path, spans: int, seed: int = 0) -> int:
    """A new-layout Studio database with about `spans` spans; returns the exact count."""
    rng = random.Random(seed)
    system = _text(rng, 1400, 1600)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    sdb.create_tables(db, "new")
    total, i = 0, 0
    while total < spans:
        run = sdb.RunScript(
            run_id=f"run-{i:07d}",
            turns=[_turn(rng) for _ in range(rng.choice((1, 2, 3)))],
            project=f"proj-{i % 7}",
            start=sdb.datetime.fromtimestamp(1_760_000_000 + i * 60, sdb.UTC),
            system=system,
        )
        raw = sdb.spans_of(run, "genai", "1.0.12")
        raw = [s for s in raw if not s.name.startswith("format ")]
        stamp = run.start.strftime("%Y-%m-%d %H:%M:%S.000")
        db.execute(
            "INSERT INTO run_table VALUES (?, ?, ?, ?, ?, ?, ?)",
            (run.run_id, run.project, run.name, stamp, "/runs", 1, "done"),
        )
        sdb.insert_spans(db, raw, "new")
        total, i = total + len(raw), i + 1
        if i % 500 == 0:
            db.commit()
    db.commit()
    db.close()
    return total


FLOOR = """
import sqlite3, sys, time, resource, orjson
from agentmill.ingest.studio import connect, detect_layout
db = connect(sys.argv[1]); layout = detect_layout(db)
cols = ", ".join('"%s"' % c for c in layout.columns if c)
t0, c0 = time.perf_counter(), time.process_time()
n = 0
for row in db.execute(f"SELECT {cols} FROM span_table"):
    orjson.loads(row[6]); n += 1
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
print(orjson.dumps({"spans": n, "wall": wall, "cpu": cpu,
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}).decode())
"""

INGEST = """
import sys, time, resource, tracemalloc, orjson
from pathlib import Path
from agentmill.ingest.base import IngestStats, read_trace_dicts
if sys.argv[2] == "trace":
    tracemalloc.start()
stats = IngestStats()
t0, c0 = time.perf_counter(), time.process_time()
built = 0
for t in read_trace_dicts("agentscope-studio", Path(sys.argv[1]), None, stats):
    built += 1
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
heap = tracemalloc.get_traced_memory()[1] / 2**20 if sys.argv[2] == "trace" else None
print(orjson.dumps({"spans": stats.read["spans"], "built": built, "wall": wall, "cpu": cpu,
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "heap_mb": heap,
      "stats": stats.to_dict()}).decode())
"""


# The whole command (`agentmill ingest ... -o OUT --tasks-out TASKS`: trajectories and tasks
# written) with N worker processes (1: serial), by wall time; CPU and peak RSS of the parent
# and of its workers (RUSAGE_CHILDREN: the workers' summed CPU, their largest RSS).
COMMAND = """
import sys, time, resource, tempfile, orjson
from pathlib import Path
from agentmill.ingest.driver import ingest
out = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
t0, c0 = time.perf_counter(), time.process_time()
s = ingest("agentscope-studio", Path(sys.argv[1]), out / "t.jsonl", out / "tasks.jsonl",
           workers=int(sys.argv[2]))
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
print(orjson.dumps({"spans": s.read["spans"], "built": s.built, "written": s.written,
      "wall": wall, "cpu": cpu, "workers_cpu": kids.ru_utime + kids.ru_stime,
      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
      "worker_rss_mb": kids.ru_maxrss / 1024, "bytes": (out / "t.jsonl").stat().st_size}).decode())
for f in out.iterdir():
    f.unlink()
out.rmdir()
"""

STAGES = """
import sys, time, orjson
from pathlib import Path
from agentmill.canonical import trajectory_dict
from agentmill.ingest import IngestOptions, IngestStats
from agentmill.ingest.rebuild import records
from agentmill.ingest.span_content import chat_prompt_raw
from agentmill.ingest.spans import find_turns
from agentmill.ingest.studio import SOURCE, read_spans
path = Path(sys.argv[1])
c0 = time.process_time()
n = sum(len(spans) for spans in read_spans(path, IngestOptions(), IngestStats()))
read = time.process_time() - c0
opts, validate = IngestOptions(), 0.0
for spans in read_spans(path, opts, IngestStats()):
    raw = list(records(spans, IngestStats(), opts, SOURCE))
    c0 = time.process_time()
    for d in raw:
        trajectory_dict(d)
    validate += time.process_time() - c0
# the prompts a rebuild never uses: every chat span's but the last of its turn (each chat
# span carries the whole prompt so far); their decoding is all that skipping them can save
unused, unused_decode = 0, 0.0
for spans in read_spans(path, IngestOptions(), IngestStats()):
    texts = []
    for turn in find_turns(spans)[0]:
        chats = [s for s, op in zip(turn.steps, turn.ops) if op == "chat"]
        texts += [orjson.dumps(p) for s in chats[:-1] if (p := chat_prompt_raw(s))]
    c0 = time.process_time()
    held = [orjson.loads(text) for text in texts]  # held a conversation at a time
    del held
    unused, unused_decode = unused + len(texts), unused_decode + time.process_time() - c0
print(orjson.dumps({"spans": n, "read": read, "validate": validate,
      "unused_prompts": unused, "unused_decode": unused_decode}).decode())
"""

# The chat spans' attributes read whole (what the ingest does) and read without their
# prompt, cut out by SQLite's JSON functions: what fetching only the prompts a rebuild uses
# would cost per chat span (SQLite parses the JSON text again to cut it).
SLIM = """
import sys, time, orjson
from agentmill.ingest.studio import connect
db = connect(sys.argv[1])
cut = "json_remove(attributes, '$.agentscope.function.input.args', '$.gen_ai.input.messages')"
out = {}
for label, column in (("whole", "attributes"), ("slim", cut)):
    c0, n = time.process_time(), 0
    for (text,) in db.execute(f"SELECT {column} FROM span_table WHERE operationName = 'chat'"):
        orjson.loads(text); n += 1
    out[label] = (time.process_time() - c0) / max(n, 1)
print(orjson.dumps({"chat_spans": n, **out}).decode())
"""


CHILD_ENV = dict(os.environ)  # --pure adds AGENTMILL_PURE_PYTHON=1 (the sources run)

COMPILED = """
import orjson
from agentmill import compiled
print(orjson.dumps({"compiled": sorted(set(compiled.status().values()))}).decode())
"""


def child(code: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env=CHILD_ENV,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_workers(path: Path, repeats: int, workers: int) -> dict[str, Any]:
    """The floor and the whole ingest command, serial and with `workers` processes, by wall
    time (best of `repeats`, interleaved so a load change hits all three alike)."""
    runs: dict[str, list[dict[str, Any]]] = {"floor": [], "serial": [], "workers": []}
    for _ in range(repeats):
        runs["floor"].append(child(FLOOR, str(path)))
        runs["serial"].append(child(COMMAND, str(path), "1"))
        runs["workers"].append(child(COMMAND, str(path), str(workers)))
    floor, serial, split = (min(runs[k], key=lambda r: r["wall"]) for k in runs)
    assert serial["bytes"] == split["bytes"] and serial["written"] == split["written"]
    return {
        "workers": workers,
        "spans": serial["spans"],
        "floor_wall_spans_per_s": floor["spans"] / floor["wall"],
        "serial_wall_spans_per_s": serial["spans"] / serial["wall"],
        "workers_wall_spans_per_s": split["spans"] / split["wall"],
        "serial_fraction_of_floor": floor["wall"] / serial["wall"],
        "workers_fraction_of_floor": floor["wall"] / split["wall"],
        "serial_cpu_s": serial["cpu"],
        "workers_cpu_s": split["cpu"] + split["workers_cpu"],  # parent + workers
        "serial_rss_mb": serial["rss_mb"],
        "workers_parent_rss_mb": split["rss_mb"],
        "workers_worker_rss_mb": split["worker_rss_mb"],
    }


def measure(path: Path, repeats: int) -> dict[str, Any]:
    """Best of `repeats` for the floor and the ingest (the box is shared), plus memory."""
    floors = [child(FLOOR, str(path)) for _ in range(repeats)]
    ingests = [child(INGEST, str(path), "plain") for _ in range(repeats)]
    traced = child(INGEST, str(path), "trace")
    stages = min((child(STAGES, str(path)) for _ in range(repeats)), key=lambda r: r["read"])
    slim = min((child(SLIM, str(path)) for _ in range(repeats)), key=lambda r: r["whole"])
    floor = min(floors, key=lambda r: r["cpu"])
    ingest = min(ingests, key=lambda r: r["cpu"])
    return {
        "spans": ingest["spans"],
        "trajectories": ingest["built"],
        "floor_spans_per_s": floor["spans"] / floor["cpu"],
        "ingest_spans_per_s": ingest["spans"] / ingest["cpu"],
        "ingest_wall_spans_per_s": ingest["spans"] / ingest["wall"],
        "fraction_of_floor": floor["cpu"] / ingest["cpu"],
        # where the ingest's CPU goes: reading rows into Spans, validating the records
        # (canonical.trajectory_dict of the same records), the rest (the rebuild)
        "share_read": stages["read"] / ingest["cpu"],
        "share_validate": stages["validate"] / ingest["cpu"],
        # the best fraction a rebuild costing nothing would reach: reading and validating
        "ceiling_fraction": floor["cpu"] / (stages["read"] + stages["validate"]),
        # decoding the prompts the rebuild never uses (all that skipping them could save)
        "share_unused_prompts": stages["unused_decode"] / ingest["cpu"],
        "unused_prompts": stages["unused_prompts"],
        # per chat span: attributes read whole and decoded, or without the prompt (SQLite cut)
        "chat_whole_us": slim["whole"] * 1e6,
        "chat_slim_us": slim["slim"] * 1e6,
        "floor_rss_mb": floor["rss_mb"],
        "ingest_rss_mb": ingest["rss_mb"],
        "ingest_heap_peak_mb": traced["heap_mb"],
        "file_mb": path.stat().st_size / 2**20,
        "skipped": ingest["stats"]["skipped"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="keep the databases here")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="measure only the whole command, serial against this many worker processes",
    )
    ap.add_argument(
        "--pure",
        action="store_true",
        help="run the modules' Python sources, not their compiled copies (AGENTMILL_PURE_PYTHON)",
    )
    args = ap.parse_args()
    if args.pure:
        CHILD_ENV["AGENTMILL_PURE_PYTHON"] = "1"
    where = args.dir or Path(tempfile.mkdtemp(prefix="bench-studio-"))
    where.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"modules": child(COMPILED)["compiled"]}
    print("modules:", results["modules"], flush=True)
    for label, n in (("full", args.spans), ("half", args.spans // 2)):
        path = where / f"studio-{n}.sqlite"
        if not path.exists():
            t0 = time.perf_counter()
            generate(path, n)
            print(f"generated {path} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        if args.workers:
            results[label] = measure_workers(path, args.repeats, args.workers)
        else:
            results[label] = measure(path, args.repeats)
        print(label, json.dumps(results[label]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
