"""Reports on trajectories: `analyze` (figures of one file or run), `compare` (two side by side).

Both are pure functions of the files: they read a trajectories JSONL file or a run folder and
return JSON-able dicts, which the CLI prints as rich tables or as JSON.
"""
