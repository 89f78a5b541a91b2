"""The question generator: tasks synthesized from tool schemas and from documents.

A generator model writes candidates; agentmill keeps only those it can check, and writes
every dropped candidate aside with its reason (docs/synth.md).

- `configs.py`  the `synth` source's config (also what `agentmill synth` builds)
- `parse.py`    reading the generator's JSON out of real model text
- `toolset.py`  the bundled tool set (a small shop, weather, unit conversion)
- `tools.py`    tasks from tool schemas: query + expected calls; format/execution/judge checks
- `docs.py`     multi-hop questions from document chains; support/leak/solver/no-tool checks
- `engine.py`   backends, bounded concurrency, dedup, stats, writing kept and dropped
- `source.py`   the `synth` source of a run config
"""
