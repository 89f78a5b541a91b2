"""The `synth` source of a run config: tasks a generator model writes, each checked first.

The source stage reads it like any source: kept candidates are yielded as tasks (appended to
`source/records.jsonl`); each dropped candidate is yielded as a `Bad` item with the reason
`synth_<reason>`, so it lands in `failures.jsonl` with the generated candidate as its detail
and is counted by reason in `source/stats.json` (`synth_dropped`; not `bad_records`, so
`strict` and `max_bad_fraction` are not affected). Model calls go to the run's `calls.jsonl`.
The run's response cache makes a resumed or repeated run replay the same candidates without
model calls (`--no-cache` turns it off); growing `n` tops the run up with new candidates.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from agentmill.records import Provenance, Task
from agentmill.sources.files import Bad
from agentmill.synth.configs import SynthSourceConfig
from agentmill.synth.engine import dropped_row, synthesize


def iter_tasks(cfg: SynthSourceConfig) -> Iterator[Task | Bad]:
    """Run the synthesizer of `cfg`; yield kept tasks and a `Bad` item per dropped candidate."""
    outcomes, _ = synthesize(cfg, show_progress=True)
    where = f"synth:{cfg.kind}"
    for o in outcomes:
        key = f"{where}#{o.index}"
        if o.kept:
            prov = Provenance(source="synth", source_id=key)
            yield o.task.model_copy(update={"provenance": prov})  # type: ignore[union-attr]
        else:
            yield Bad(key, f"synth_{o.reason}", orjson.dumps(dropped_row(o)).decode())
