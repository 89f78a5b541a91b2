"""The Cython-compiled ingest modules (setup.py): built, never stale, the same as the source."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from studio_db import build_db, sample_run

import agentmill
from agentmill import compiled
from agentmill.ingest.driver import ingest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(agentmill.__file__).parent
FIXTURES = Path(__file__).parent / "fixtures"


def _setup_list() -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "COMPILED":
            return [p.removesuffix(".py").replace("/", ".") for p in ast.literal_eval(node.value)]
    raise AssertionError("setup.py has no COMPILED list")


def _need_build() -> None:
    if not compiled.manifest():
        pytest.skip("agentmill was installed without its compiled modules (`make compile`)")


def test_the_install_compiled_every_listed_module() -> None:
    _need_build()
    assert sorted(compiled.manifest()) == sorted(_setup_list())
    if os.environ.get(compiled.PURE_ENV):
        pytest.skip(f"{compiled.PURE_ENV} is set: the sources run")
    assert set(compiled.status().values()) == {"compiled"}, compiled.status()
    import agentmill.ingest.rebuild as rebuild

    assert not rebuild.__file__.endswith(".py")


def _run(code: str, pythonpath: Path | None = None, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV} | env
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_an_edited_module_runs_as_its_source_not_its_old_binary(tmp_path: Path) -> None:
    _need_build()
    copy = tmp_path / "src"
    shutil.copytree(PACKAGE, copy / "agentmill", ignore=shutil.ignore_patterns("__pycache__"))
    with (copy / "agentmill" / "canonical.py").open("a") as f:
        f.write("\nEDITED = True\n")
    # a binary the build no longer makes (this one would not even import as `driver`)
    binary = next((copy / "agentmill" / "ingest").glob("rebuild.*.so"))
    shutil.copy(binary, binary.with_name(binary.name.replace("rebuild", "driver")))
    code = (
        "import json, agentmill.canonical as c, agentmill.ingest.spans as s\n"
        "import agentmill.ingest.driver as d\n"
        "from agentmill import compiled\n"
        "print(json.dumps([c.__file__, getattr(c, 'EDITED', False), s.__file__,"
        " compiled.status(), d.__file__]))"
    )
    canon, edited, spans, status, driver = json.loads(_run(code, copy))
    assert driver == str(copy / "agentmill" / "ingest" / "driver.py")
    assert canon == str(copy / "agentmill" / "canonical.py") and edited is True
    assert not spans.endswith(".py")  # the untouched modules still run compiled
    assert status["agentmill.canonical"] == "source (stale)"
    assert status["agentmill.ingest.spans"] == "compiled"


def test_the_sources_and_the_binaries_write_the_same_bytes(tmp_path: Path) -> None:
    """AGENTMILL_PURE_PYTHON runs the sources: the same files come out, byte for byte."""
    _need_build()
    inputs = [
        ("agentscope-studio", build_db(tmp_path / "a.sqlite", [sample_run()], "old", "old")),
        (
            "agentscope-studio",
            build_db(tmp_path / "b.sqlite", [sample_run()], "new", "as2", "2.0.8"),
        ),
        ("otel", FIXTURES / "otel" / "agentscope-1.0.21.otlp.jsonl"),
        ("mini-swe", FIXTURES / "miniswe" / "v2_toolcall.traj.json"),
    ]
    for i, (fmt, path) in enumerate(inputs):
        ingest(fmt, path, tmp_path / f"c{i}.jsonl", tmp_path / f"ct{i}.jsonl")
    code = (
        "import sys, json\nfrom pathlib import Path\n"
        "from agentmill.ingest.driver import ingest\nfrom agentmill import compiled\n"
        f"for i, (fmt, path) in enumerate({[(f, str(p)) for f, p in inputs]!r}):\n"
        f"    d = Path({str(tmp_path)!r})\n"
        "    ingest(fmt, Path(path), d / f'p{i}.jsonl', d / f'pt{i}.jsonl')\n"
        "print(json.dumps(sorted(set(compiled.status().values()))))"
    )
    assert json.loads(_run(code, **{compiled.PURE_ENV: "1"})) == [f"source ({compiled.PURE_ENV})"]
    for i in range(len(inputs)):
        assert (tmp_path / f"c{i}.jsonl").read_bytes() == (tmp_path / f"p{i}.jsonl").read_bytes()
        assert (tmp_path / f"ct{i}.jsonl").read_bytes() == (tmp_path / f"pt{i}.jsonl").read_bytes()
        assert (tmp_path / f"c{i}.jsonl").stat().st_size > 0
