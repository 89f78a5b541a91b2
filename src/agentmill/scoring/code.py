"""Code reward: run the model's final code block against the task's tests in the sandbox.

The code is the last ```python (or untagged) block of the final answer, else of the last
assistant message that has one. The tests are `task.metadata["tests"]`, else the ground
truth when it looks like tests: a string of Python test code or a list of assert strings.
Each test is one unit: each `test*` function the test code defines, or else each top-level
`assert` (other top-level statements run in order between them, as setup), or with
`metadata["entry_point"]` and a `check` function (HumanEval), the one call
`check(entry_point)`. The reward is the fraction of tests passed; no code block gives 0.0,
no tests (or test code that does not parse) gives None.

All tests run in ONE sandbox (`run_python`, `CodeRewardConfig.sandbox`) through a small
harness: it imports the solution as module `solution` (so `__main__` blocks stay quiet and
`from solution import f` works), then runs each test in try/except under its own alarm, so
a test that loops costs that test, not the others. Per test it writes a result line,
`<marker> <index> <1|0> <error>`, with a random marker given on stdin, to a private copy of
stdout; the code's own stdout goes to /dev/null, so prints can neither flood the output
limit nor fake a result. A sandbox killed midway (wall clock, CPU, memory, or output past
`max_output_bytes`: some 30 bytes a test) keeps the results written before.

What the marker does NOT stop: the solution runs in the harness's interpreter, so code
written to cheat on purpose (walking the stack to read the marker, patching `AssertionError`,
returning objects equal to everything) can still fool the count. It stops accidents and
naive imitation, not an adversary; check high-reward samples of untrusted models.

Example (needs bubblewrap):

    >>> import asyncio
    >>> from agentmill.records import Task, Trajectory
    >>> task = Task.create("Write add.", metadata={"tests": ["assert add(1, 2) == 3"]})
    >>> t = Trajectory(id="t", task_id=task.id, messages=[],
    ...                final_answer="```python\\ndef add(a, b):\\n    return a + b\\n```")
    >>> asyncio.run(CodeReward(CodeRewardConfig()).score(t, task))
    1.0
"""

from __future__ import annotations

import ast
import json
import re
import secrets
from typing import Any

from agentmill.records import Task, Trajectory
from agentmill.scoring.configs import CodeRewardConfig
from agentmill.scoring.text import final_text

# (kind, source): kind "setup" runs and may fail quietly, kind "test" is counted
Item = tuple[str, str]

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("", "python", "py", "python3")
# Share of the sandbox's wall-clock limit the per-item alarms may use up together; the rest
# is for starting the interpreter and reporting.
_ALARM_SHARE = 0.8

_HARNESS = """
import json, os, signal, sys, types


class _Timeout(BaseException):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _run(source, namespace, seconds):
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        exec(compile(source, "<tests>", "exec"), namespace)
        return True, ""
    except BaseException as e:
        return False, type(e).__name__ or "?"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def _safe_run(source, namespace, seconds):
    try:
        return _run(source, namespace, seconds)
    except _Timeout:  # the alarm went off just as the item ended
        return False, "_Timeout"


def _main():
    marker = sys.stdin.readline().strip()
    report = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    module = types.ModuleType("solution")
    sys.modules["solution"] = module
    _safe_run(DATA["solution"], module.__dict__, DATA["seconds"])
    namespace = dict(module.__dict__, __name__="__tests__")
    index = 0
    for kind, source in DATA["items"]:
        ok, error = _safe_run(source, namespace, DATA["seconds"])
        if kind == "test":
            print(marker, index, int(ok), error, file=report, flush=True)
            index += 1


_main()
"""


def extract_code(text: str) -> str | None:
    """The last fenced python or untagged code block in `text`.

    >>> extract_code("```python\\nx = 1\\n```\\nthen\\n```\\nx = 2\\n```\\n```bash\\nls\\n```")
    'x = 2\\n'
    >>> extract_code("no code") is None
    True
    """
    blocks = [m.group(2) for m in _FENCE.finditer(text) if m.group(1).lower() in _PYTHON_TAGS]
    return blocks[-1] if blocks else None


def final_code(trajectory: Trajectory) -> str | None:
    """The code of the final answer, else of the last assistant message that has a block."""
    found = extract_code(final_text(trajectory))
    if found is not None:
        return found
    for m in reversed(trajectory.messages):
        if m.role == "assistant" and (found := extract_code(m.text)) is not None:
            return found
    return None


def task_tests(task: Task) -> str | list[str] | None:
    """`metadata["tests"]`, else a ground truth that looks like test code; None if neither."""
    tests = task.metadata.get("tests")
    if tests is None and _looks_like_tests(task.ground_truth):
        tests = task.ground_truth
    if isinstance(tests, str) or (isinstance(tests, list) and tests):
        return tests
    return None


def _looks_like_tests(value: Any) -> bool:
    if isinstance(value, list):
        return bool(value) and all(isinstance(v, str) and "assert" in v for v in value)
    return isinstance(value, str) and ("assert" in value or "def test" in value)


def split_tests(tests: str | list[str], entry_point: str | None = None) -> list[Item] | None:
    """The harness's items in order; None when the test code does not parse.

    >>> split_tests(["assert f(1) == 1", "assert f(2) == 4"])
    [('test', 'assert f(1) == 1'), ('test', 'assert f(2) == 4')]
    >>> [kind for kind, _ in split_tests("import math\\nassert f(1) == 1\\ny = 2\\nassert f(y)")]
    ['setup', 'test', 'setup', 'test']
    >>> split_tests("def test_a():\\n    assert f(1) == 1")[1:]
    [('test', 'test_a()')]
    """
    if isinstance(tests, list):
        return [("test", str(t)) for t in tests if str(t).strip()]
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError):
        return None
    functions = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    if named := [f for f in functions if f.startswith("test")]:
        return [("setup", tests), *(("test", f"{f}()") for f in named)]
    if "check" in functions and entry_point:
        return [("setup", tests), ("test", f"check({entry_point})")]
    return [("test" if isinstance(n, ast.Assert) else "setup", ast.unparse(n)) for n in tree.body]


def harness(solution: str, items: list[Item], seconds: float) -> str:
    """The program the sandbox runs: the data as one JSON literal, then the fixed harness."""
    data = json.dumps({"solution": solution, "items": items, "seconds": seconds})
    return f"import json\nDATA = json.loads({data!r})\n{_HARNESS}"


def count_passed(stdout: str, marker: str, n_tests: int) -> int:
    """Distinct tests reported passed on lines `<marker> <index> 1 ...`.

    >>> count_passed("M 0 1 \\nM 1 0 AssertionError\\n0 1\\nX 2 1\\n", "M", 3)
    1
    """
    passed: set[int] = set()
    for line in stdout.splitlines():
        fields = line.split()
        ok = len(fields) >= 3 and fields[0] == marker and fields[2] == "1"
        if ok and fields[1].isdigit() and int(fields[1]) < n_tests:
            passed.add(int(fields[1]))
    return len(passed)


class CodeReward:
    """The fraction of the task's tests the final code block passes (see the module doc)."""

    def __init__(self, cfg: CodeRewardConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    async def score(self, trajectory: Trajectory, task: Task | None) -> float | None:
        tests = task_tests(task) if task is not None else None
        items = split_tests(tests, task.metadata.get("entry_point")) if task and tests else None
        n_tests = sum(kind == "test" for kind, _ in items or [])
        if not n_tests:
            return None
        code = final_code(trajectory)
        if code is None:
            return 0.0
        return await self._run(code, items or [], n_tests)

    async def _run(self, code: str, items: list[Item], n_tests: int) -> float:
        from agentmill.rollout.tools.python import run_python

        seconds = max(0.5, self.cfg.sandbox.timeout_s * _ALARM_SHARE / (len(items) + 1))
        marker = secrets.token_hex(12)  # short: result lines count against the output limit
        program = harness(code, items, seconds)
        result = await run_python(program, self.cfg.sandbox, stdin=marker + "\n")
        return count_passed(result.stdout, marker, n_tests) / n_tests
