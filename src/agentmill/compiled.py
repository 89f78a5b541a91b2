"""Which agentmill modules run compiled (Cython, see setup.py), and never a stale one.

The build compiles a few plain-Python modules of the ingest hot path and records the sha256
of each one's source in `_compiled.json`. Python prefers a compiled module to its source, so
after an edit the old compiled copy would run; `install()` (called when agentmill is
imported) puts a finder first on `sys.meta_path` that loads the source instead whenever it
no longer matches the recorded hash, for a binary the last build did not make (a module no
longer compiled), and for every module when AGENTMILL_PURE_PYTHON is set (to compare the
two, or to debug the Python).

>>> sorted(set(status().values()) - {"compiled", "source (not built)", "source (stale)",
...                                  "source (AGENTMILL_PURE_PYTHON)"})
[]
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = Path(__file__).resolve().parent
MANIFEST = PACKAGE / "_compiled.json"
PURE_ENV = "AGENTMILL_PURE_PYTHON"


def manifest() -> dict[str, str]:
    """module name -> sha256 of the source it was compiled from ({} when none was built)."""
    try:
        data = json.loads(MANIFEST.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def source_of(name: str) -> Path:
    return PACKAGE.parent.joinpath(*name.split(".")).with_suffix(".py")


def fresh(name: str, recorded: str | None) -> bool:
    """Whether the compiled copy of `name` was built from its current source."""
    try:
        return recorded == hashlib.sha256(source_of(name).read_bytes()).hexdigest()
    except OSError:
        return False


_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def _has_binary(name: str) -> bool:
    stem = source_of(name).with_suffix("")
    return any(stem.with_name(stem.name + s).is_file() for s in _SUFFIXES)


def status() -> dict[str, str]:
    """Each compilable module and what runs: compiled, or its source and why."""
    out = {}
    for name, recorded in manifest().items():
        if not _has_binary(name):
            out[name] = "source (not built)"
        elif os.environ.get(PURE_ENV):
            out[name] = f"source ({PURE_ENV})"
        elif not fresh(name, recorded):
            out[name] = "source (stale)"
        else:
            module = sys.modules.get(name)
            loaded = module is None or _is_compiled(module)
            out[name] = "compiled" if loaded else "source (stale)"
    return out


def _is_compiled(module: ModuleType) -> bool:
    return str(getattr(module, "__file__", "")).endswith(_SUFFIXES)


class _SourceWhenStale(importlib.abc.MetaPathFinder):
    def __init__(self, recorded: dict[str, str], pure: bool):
        self.recorded, self.pure = recorded, pure

    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        if fullname in self.recorded:
            if not self.pure and fresh(fullname, self.recorded[fullname]):
                return None  # the normal finders pick the compiled module
        elif not (fullname.startswith("agentmill.") and _has_binary(fullname)):
            return None  # a plain module (an orphan binary, no longer built, is never used)
        source = source_of(fullname)
        if not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def install() -> None:
    """Guard the compiled modules (once per process; nothing to do when none were built)."""
    recorded = manifest()
    if not recorded or any(isinstance(f, _SourceWhenStale) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _SourceWhenStale(recorded, bool(os.environ.get(PURE_ENV))))
