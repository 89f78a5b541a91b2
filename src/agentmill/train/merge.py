"""`agentmill merge CONFIG.yaml --out DIR`: model merging through mergekit.

The YAML is mergekit's own (`merge_method`, `models`, `base_model`, `parameters`, `dtype`, ...),
validated by mergekit's `MergeConfiguration` and passed through unchanged, except that a model
may also be named by an embedded alias (`smollm2-135m`), which is replaced by its folder. Every
model must be a local folder: hubs are not reached. Methods: linear, slerp, ties, dare_ties,
task_arithmetic, and the rest mergekit offers.

    merge_method: ties
    base_model: models/base
    models:
      - {model: models/math, parameters: {weight: 0.6, density: 0.5}}
      - {model: models/tools, parameters: {weight: 0.4, density: 0.5}}
    parameters: {normalize: true}
    dtype: float32

`DIR` gets the merged model (the base's tokenizer copied, loadable by the `local` backend) and
`merge.json`: the config as given and as run, the method, seconds, the mergekit version. The
model is written into a staging folder and moved into place, `merge.json` last.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import yaml

from agentmill.errors import UserError
from agentmill.store import write_atomic


def _resolve_models(node: Any) -> Any:
    """Each `model:` value -> a local folder (embedded aliases resolved); refuse hub names."""
    from agentmill.models import EMBEDDED, is_model_folder, resolve_model

    if isinstance(node, list):
        return [_resolve_models(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("model", "base_model") and isinstance(value, str):
            path = Path(value).expanduser()
            if not is_model_folder(path) and value not in EMBEDDED:
                raise UserError(
                    f"merge: model {value!r} is not a local model folder (config.json) or an "
                    "embedded model; hubs are not reached, so download it first"
                )
            out[key] = str(resolve_model(value).resolve())
        else:
            out[key] = _resolve_models(value)
    return out


def _model_paths(node: Any) -> list[str]:
    """Every distinct model folder a config names (after `_resolve_models`), in order."""
    found: list[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, list):
            for x in n:
                walk(x)
        elif isinstance(n, dict):
            for key, value in n.items():
                if key in ("model", "base_model") and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)

    walk(node)
    return list(dict.fromkeys(p for p in found if p))


def load_merge_config(path: Path) -> tuple[dict[str, Any], Any]:
    """(the YAML as given, mergekit's validated `MergeConfiguration` with local paths)."""
    from mergekit.config import MergeConfiguration
    from pydantic import ValidationError

    if not path.exists():
        raise UserError(f"merge config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({type(e).__name__}); fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} is not a mergekit config (a YAML mapping with merge_method)")
    try:
        cfg = MergeConfiguration.model_validate(_resolve_models(raw))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise UserError(f"{path}: {where}: {err['msg']} (mergekit's config format)") from None
    except (RuntimeError, ValueError) as e:  # mergekit's own checks raise these
        raise UserError(f"{path}: {e} (mergekit's config format)") from None
    return raw, cfg


def merge(config: Path, out: Path, seed: int | None = 0) -> dict[str, Any]:
    """Run the merge of `config` into `out`; returns what merge.json holds."""
    from importlib.metadata import version

    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    raw, cfg = load_merge_config(config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "merge.json").unlink(missing_ok=True)
    staging = out / ".merging"
    shutil.rmtree(staging, ignore_errors=True)
    start = time.time()
    options = MergeOptions(copy_tokenizer=True, random_seed=seed, quiet=True)
    try:
        run_merge(cfg, str(staging), options)
    except (RuntimeError, ValueError, KeyError) as e:  # incompatible models, bad parameters
        shutil.rmtree(staging, ignore_errors=True)
        raise UserError(f"merge failed: {type(e).__name__}: {e}") from None
    for f in staging.iterdir():
        target = out / f.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(f, target)
    shutil.rmtree(staging, ignore_errors=True)
    resolved = cfg.model_dump(mode="json", exclude_none=True)
    summary = {
        "config": str(config),
        "inputs": _model_paths(_resolve_models(raw)),
        "given": raw,
        "resolved": resolved,
        "merge_method": cfg.merge_method,
        "model": str(out),
        "seed": seed,
        "seconds": round(time.time() - start, 2),
        "mergekit": version("mergekit"),
    }
    write_atomic(out / "merge.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    return summary
