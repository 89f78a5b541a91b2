"""Compiles agentmill's trace-ingest hot path with Cython where a C compiler is available.

Everything else about the package is in pyproject.toml. The modules in COMPILED are plain
Python; compiling them unchanged makes `agentmill ingest` about a quarter cheaper in CPU
(docs/benchmarks.md). Without Cython or a compiler, or with AGENTMILL_PURE_PYTHON=1 set at
build time, the package installs as pure Python and works the same, only slower.

Next to the compiled modules the build writes `agentmill/_compiled.json`: the sha256 of each
module's source. `agentmill.compiled` loads a module's source instead of its compiled copy
when the two differ, so an edited module never runs as its old compiled self (editable
installs); `make compile` (or `python setup.py build_ext --inplace`) rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
COMPILED = [
    "agentmill/canonical.py",
    "agentmill/ingest/rebuild.py",
    "agentmill/ingest/span_content.py",
    "agentmill/ingest/span_messages.py",
    "agentmill/ingest/spans.py",
    "agentmill/ingest/studio.py",
    "agentmill/ingest/studio_rows.py",
    "agentmill/ingest/tasks.py",
]
MANIFEST = "agentmill/_compiled.json"


def _extensions() -> list:
    if os.environ.get("AGENTMILL_PURE_PYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("agentmill: Cython not found; installing pure Python", file=sys.stderr)
        return []
    sources = [str(Path("src") / p) for p in COMPILED]
    return cythonize(
        sources,
        build_dir="build/cython",
        compiler_directives={"language_level": 3},
        nthreads=os.cpu_count() or 1,
        quiet=True,
    )


class OptionalBuildExt(build_ext):
    """build_ext that falls back to pure Python instead of failing the install, and writes
    the manifest of what it compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all
            print(f"agentmill: not compiling ({e}); installing pure Python", file=sys.stderr)
            return
        self._write_manifest()

    def build_extension(self, ext) -> None:
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"agentmill: {ext.name} not compiled ({e}); using its source", file=sys.stderr)

    def _write_manifest(self) -> None:
        built = {}
        for ext in self.extensions:
            if Path(self.get_ext_fullpath(ext.name)).is_file():
                source = ROOT / "src" / (ext.name.replace(".", "/") + ".py")
                built[ext.name] = hashlib.sha256(source.read_bytes()).hexdigest()
        where = ROOT / "src" if self.inplace else Path(self.build_lib)
        (where / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
        (where / MANIFEST).write_text(json.dumps(built, indent=1, sort_keys=True) + "\n")


setup(ext_modules=_extensions(), cmdclass={"build_ext": OptionalBuildExt})
