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
    import agentmill.curation.balance
    import agentmill.curation.decontaminate
    import agentmill.curation.dedup
    import agentmill.curation.filters
    import agentmill.export.trl_sft
    import agentmill.records
    import agentmill.sources.files
    import agentmill.testing.near_dupes

    modules = (
        agentmill.records,
        agentmill.sources.files,
        agentmill.backends.scripted,
        agentmill.curation.filters,
        agentmill.curation.dedup,
        agentmill.curation.decontaminate,
        agentmill.curation.balance,
        agentmill.export.trl_sft,
        agentmill.testing.near_dupes,
    )
    for mod in modules:
        result = doctest.testmod(mod)
        assert result.attempted > 0 and result.failed == 0, mod.__name__
