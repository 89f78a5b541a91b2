"""Opening a run folder for a config: new run, resume, top-up, or refusal.

- Same fingerprint, same additive settings: resume (skip finished work).
- Same fingerprint, additive settings grown (more tasks, a larger `n`): top up.
- Anything that would change outputs (model, sampling, prompts, sources, seed), or an
  additive setting lowered: refused with the changed keys, unless `--new`, which starts a
  fresh folder beside the old one (the old one is never touched).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agentmill.config import RunConfig, additive_view, fingerprint, fingerprint_view
from agentmill.configfile import dump_config
from agentmill.errors import UserError
from agentmill.store import (
    CONFIG,
    FAILURES,
    MANIFEST,
    RunStore,
    new_run_id,
    package_versions,
    write_atomic,
)


def default_out(cfg: RunConfig) -> Path:
    return Path("runs") / cfg.name


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out |= _flatten(v, f"{prefix}{k}.")
        return out or {prefix.rstrip("."): {}}
    if isinstance(d, list):
        out = {}
        for i, v in enumerate(d):
            out |= _flatten(v, f"{prefix}{i}.")
        return out or {prefix.rstrip("."): []}
    return {prefix.rstrip("."): d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable `key: old -> new` lines for the keys that differ."""
    a, b = _flatten(old), _flatten(new)
    return [
        f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k, "(unset)") != b.get(k, "(unset)")
    ]


def _shrunk(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Additive settings that went down (None means unlimited)."""
    a, b = _flatten(old), _flatten(new)
    out = []
    for k, was in a.items():
        now = b.get(k)
        if was is None and now is None:
            continue
        if (was is None) or (now is not None and isinstance(was, int | float) and now < was):
            out.append(f"{k}: {was!r} -> {now!r}")
    return out


def _free_folder(out: Path) -> Path:
    if not (out / MANIFEST).exists():
        return out
    k = 2
    while (out.parent / f"{out.name}.{k}" / MANIFEST).exists():
        k += 1
    return out.parent / f"{out.name}.{k}"


def _check_compatible(out: Path, manifest: dict[str, Any], cfg: RunConfig) -> list[str]:
    changed = config_diff(manifest.get("fingerprint_view", {}), fingerprint_view(cfg))
    hint = "; rerun with --new to start a fresh run folder beside it, or restore the config"
    if changed:
        shown = "; ".join(changed[:3]) + (
            f"; and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        raise UserError(f"run folder {out} was made with a different config ({shown}){hint}")
    shrunk = _shrunk(manifest.get("additive", {}), additive_view(cfg))
    if shrunk:
        raise UserError(
            f"run folder {out} was made with more work than this config asks for "
            f"({'; '.join(shrunk)}){hint}"
        )
    return config_diff(manifest.get("additive", {}), additive_view(cfg))


def _has_outputs(out: Path) -> bool:
    """True once any stage past `source` has written a record (the tasks alone are derived
    from the sources and cheap to re-read)."""
    return any(
        p.stat().st_size > 0 for p in out.glob("*/records.jsonl") if p.parent.name != "source"
    )


def open_run(
    cfg: RunConfig, out: Path | None = None, new: bool = False
) -> tuple[RunStore, list[str]]:
    """Open (or create) the run folder for `cfg`; return the store and any top-up changes.

    A folder whose earlier attempt produced nothing yet (say, a typo in the config stopped
    it) takes the new config without `--new`.
    """
    out = out or default_out(cfg)
    if new:
        out = _free_folder(out)
    manifest = RunStore.read_manifest(out) if (out / MANIFEST).exists() else {}
    if manifest and not _has_outputs(out):
        (out / "source" / "records.jsonl").unlink(missing_ok=True)
        if (out / FAILURES).exists():  # kept, but no longer counted against the new config
            (out / FAILURES).rename(out / f"failures.{manifest.get('run_id', 'old')}.jsonl")
        manifest = {}
    grown = _check_compatible(out, manifest, cfg) if manifest else []
    store = RunStore(out)
    if not manifest:
        store.manifest = {"run_id": new_run_id(), "name": cfg.name, "created_at": time.time()}
    store.manifest |= {
        "fingerprint": fingerprint(cfg),
        "fingerprint_view": fingerprint_view(cfg),
        "additive": additive_view(cfg),
        "versions": package_versions(),
    }
    store.manifest.setdefault("sessions", []).append({"started_at": time.time()})
    store.save_manifest()
    write_atomic(out / CONFIG, dump_config(cfg).encode())
    return store, grown
