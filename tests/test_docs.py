"""The docs and examples stay true to the code."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_current_cli() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_doctests_of_public_modules() -> None:
    import doctest

    import agentmill.backends.scripted
    import agentmill.records
    import agentmill.sources.files

    for mod in (agentmill.records, agentmill.sources.files, agentmill.backends.scripted):
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__
