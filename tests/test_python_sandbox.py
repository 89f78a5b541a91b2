"""The python tool's sandbox against hostile code: every attack must be stopped by its limit,
with a clear observation, while this test process and the machine carry on unharmed."""

from __future__ import annotations

import asyncio
import doctest
import os
import resource
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentmill.errors import UserError
from agentmill.rollout.configs import PythonToolConfig
from agentmill.rollout.tools import python as python_tool
from agentmill.rollout.tools.python import (
    PythonTool,
    SandboxResult,
    build,
    observation,
    run_python,
)

FAST = PythonToolConfig(timeout_s=5, cpu_s=5, memory_mb=256, max_processes=8)


def run(code: str, cfg: PythonToolConfig = FAST, stdin: str | None = None) -> SandboxResult:
    return asyncio.run(run_python(code, cfg, stdin))


def processes_of(uid: int) -> list[str]:
    """Host processes still running as `uid` (a sandbox's uid when the tests run as root)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and entry.stat().st_uid == uid:
                found.append(entry.name)
        except FileNotFoundError:
            continue
    return found


@pytest.fixture
def outside_file() -> Iterator[Path]:
    """A world-writable file outside /tmp, so only the read-only mount can protect it."""
    base = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path(tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix="agentmill-victim-", dir=base))
    folder.chmod(0o777)
    victim = folder / "victim.txt"
    victim.write_text("original\n")
    victim.chmod(0o666)
    yield victim
    for child in folder.iterdir():
        child.unlink()
    folder.rmdir()


def test_module_doctest_runs_in_the_sandbox() -> None:
    result = doctest.testmod(python_tool)
    assert result.attempted > 0 and result.failed == 0


def test_prints_reads_stdin_and_exits_zero() -> None:
    result = run("import sys\nprint('got', sys.stdin.read().strip())", stdin="hello")
    assert result.ok and result.stdout == "got hello\n" and result.stderr == ""


def test_odd_text_reaches_the_code_intact_or_replaced() -> None:
    result = run(
        "import sys\nprint(sys.stdin.read())\nprint('\u00e9\ud800')", stdin="\u00e9t\u00e9"
    )
    assert result.stdout.startswith("\u00e9t\u00e9\n")


def test_exception_shows_traceback_and_exit_status() -> None:
    text = asyncio.run(PythonTool(FAST).call({"code": "def f():\n    return 1 / 0\nf()"}))
    assert "[stderr]" in text and "Traceback" in text and "ZeroDivisionError" in text
    assert text.endswith("[exit status 1]")


def test_infinite_loop_is_killed_at_the_wall_clock_timeout() -> None:
    cfg = FAST.model_copy(update={"timeout_s": 1.0, "cpu_s": 30})
    start = time.monotonic()
    result = run("print('spinning')\nwhile True:\n    pass", cfg)
    assert time.monotonic() - start < 4
    assert result.timed_out and result.killed_reason == "timeout"
    assert observation(result, cfg) == "spinning\n[killed: wall-clock timeout after 1 s]"


def test_cpu_time_limit_stops_busy_code() -> None:
    cfg = FAST.model_copy(update={"timeout_s": 15.0, "cpu_s": 1})
    result = run("while True:\n    pass", cfg)
    assert result.killed_reason == "cpu" and not result.timed_out
    assert "[killed: CPU time limit 1 s]" in observation(result, cfg)


def test_process_limit_refuses_forks_beyond_max_processes() -> None:
    code = (
        "import os, time\nn = 0\ntry:\n    for _ in range(100):\n"
        "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
        "        n += 1\nexcept OSError as e:\n    print('refused after', n, e.errno)\n"
    )
    result = run(code)
    assert result.ok
    words = result.stdout.split()
    assert words[:2] == ["refused", "after"] and int(words[2]) < FAST.max_processes


BOMB = """
import os
print(os.getuid(), flush=True)
while True:
    try:
        os.fork()
    except OSError:
        pass
"""
FORKS_THREE = """
import os
pids = [os.fork() or os._exit(0) for _ in range(3)]
print(len([os.waitpid(p, 0) for p in pids]))
"""


def test_fork_bomb_is_contained_and_leaves_nothing_behind() -> None:
    async def bomb_beside_a_neighbour() -> tuple[SandboxResult, SandboxResult]:
        bomb = asyncio.create_task(run_python(BOMB, FAST.model_copy(update={"timeout_s": 2.0})))
        await asyncio.sleep(0.5)  # the bomb has used up its own process budget by now
        neighbour = await run_python(FORKS_THREE, FAST)
        return await bomb, neighbour

    result, neighbour = asyncio.run(bomb_beside_a_neighbour())
    assert result.killed_reason == "timeout"
    assert neighbour.stdout == "3\n"  # parallel sandboxes never share a process budget
    uid = int(result.stdout.split()[0])
    if os.geteuid() == 0:
        assert uid in python_tool.SANDBOX_UIDS
        assert gone(lambda: processes_of(uid))
    assert run("print('still fine')").stdout == "still fine\n"


def test_ten_gigabyte_allocation_hits_the_memory_limit() -> None:
    result = run("data = bytearray(10 * 1024**3)\nprint('allocated')")
    assert result.killed_reason == "memory" and "allocated" not in result.stdout
    assert "[killed: memory limit 256 MB]" in observation(result, FAST)


def test_no_network_even_to_a_loopback_listener() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e.errno)\n"
        )
        result = run(code)
        with pytest.raises(BlockingIOError):
            listener.accept()  # the test fails here if the sandbox reached the host
    assert result.stdout.startswith("refused") and "CONNECTED" not in result.stdout


def test_cannot_write_outside_its_working_directory(outside_file: Path) -> None:
    before = outside_file.stat()
    code = f"""
import os
target = {str(outside_file)!r}
for attempt in (lambda: open(target, "w").write("pwned"),
                lambda: os.remove(target),
                lambda: os.rename(target, target + ".moved"),
                lambda: os.chmod(target, 0o777)):
    try:
        attempt()
        print("DID IT")
    except OSError as e:
        print("blocked", e.errno)
open("scratch.txt", "w").write("fine")
print(os.getcwd(), open("/tmp/work/scratch.txt").read())
"""
    result = run(code)
    assert "DID IT" not in result.stdout and result.stdout.count("blocked") == 4
    assert result.stdout.endswith("/tmp/work fine\n")
    after = outside_file.stat()
    assert outside_file.read_text() == "original\n"
    assert (after.st_mtime_ns, stat.S_IMODE(after.st_mode)) == (before.st_mtime_ns, 0o666)


def test_gigabyte_of_output_is_truncated_without_buffering_it() -> None:
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    result = run("import sys\nfor _ in range(16384):\n    sys.stdout.write('x' * 65536)\n")
    assert time.monotonic() - start < 5
    assert result.truncated and result.killed_reason == "output_limit"
    assert len(result.stdout) == FAST.max_output_bytes
    growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert growth_kb < 64 * 1024
    assert observation(result, FAST).endswith("[output truncated to 8192 bytes per stream]")


def test_working_directory_is_fresh_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the host side goes
    assert run("open('state', 'w').write('1')").ok
    result = run("import os\nprint(sorted(os.listdir('.')))")
    assert result.stdout == "['main.py']\n"
    assert list(tmp_path.iterdir()) == []


def test_host_environment_and_private_files_do_not_leak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTMILL_TEST_SECRET", "sk-do-not-leak")
    code = (
        "import os\nprint(os.environ.get('AGENTMILL_TEST_SECRET'), os.getuid() != 0)\n"
        "for path in ('/etc/shadow', os.path.expanduser('~root/.bash_history')):\n"
        "    try:\n        open(path).read()\n        print('READ', path)\n"
        "    except OSError:\n        pass\n"
    )
    result = run(code)
    assert result.stdout == "None True\n"


def test_cancelled_call_kills_the_sandbox() -> None:
    marker = f"agentmill-cancel-{os.getpid()}-{time.monotonic_ns()}"
    code = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])"

    async def cancel() -> bool:
        task = asyncio.create_task(run_python(code, FAST))
        await asyncio.sleep(1.0)
        started = bool(processes_with(marker))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return started

    assert asyncio.run(cancel())
    assert gone(lambda: processes_with(marker))


def gone(find: Callable[[], list[str]], within_s: float = 3.0) -> bool:
    """True once `find` reports no process (the kernel reaps a dead sandbox asynchronously)."""
    deadline = time.monotonic() + within_s
    while find():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def processes_with(marker: str) -> list[str]:
    """Host processes whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker.encode() in (entry / "cmdline").read_bytes():
                found.append(entry.name)
        except OSError:
            continue
    return found


def test_missing_bubblewrap_is_a_user_error_never_a_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    python_tool.check_sandbox.cache_clear()
    monkeypatch.setattr(python_tool.shutil, "which", lambda name: None)
    try:
        with pytest.raises(UserError, match="needs bubblewrap: apt-get install bubblewrap"):
            run("print('ran unsandboxed')")
        with pytest.raises(UserError, match="needs bubblewrap"):
            build(FAST)
    finally:
        python_tool.check_sandbox.cache_clear()


def test_tool_schema_and_argument_errors() -> None:
    (tool,) = build(FAST)
    function = tool.schema()["function"]
    assert function["name"] == "python" and function["parameters"]["required"] == ["code"]
    from agentmill.rollout.tools import ToolError

    with pytest.raises(ToolError, match="code"):
        asyncio.run(tool.call({"code": "  "}))
    assert asyncio.run(tool.call({"code": "x = 1"})) == "(no output)"
