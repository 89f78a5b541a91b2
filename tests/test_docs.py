"""The docs and examples stay true to the code."""

import subprocess
import sys
from pathlib import Path

import agentmill

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_current_cli() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _modules_with_doctests() -> list[str]:
    root = Path(agentmill.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        if ">>> " in path.read_text():
            rel = path.relative_to(root.parent).with_suffix("")
            names.append(".".join(rel.parts).removesuffix(".__init__"))
    return names


def test_doctests_of_every_module() -> None:
    """Every module whose docstrings show `>>>` examples runs them (found, not listed)."""
    import doctest
    import importlib

    names = _modules_with_doctests()
    assert len(names) >= 20, names
    for name in names:
        result = doctest.testmod(importlib.import_module(name))
        assert result.failed == 0, name
