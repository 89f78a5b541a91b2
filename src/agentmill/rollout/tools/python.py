"""The `python` tool: model-written code in a bubblewrap sandbox, and `run_python` for rewards.

Each call starts a fresh sandbox (about 70 ms) and throws it away afterwards:

- namespaces: own mount, pid, network (loopback only, so nothing outside is reachable),
  IPC, UTS and cgroup namespaces; the host's processes are invisible (new /proc).
- an unprivileged identity: run as root (our CI), bwrap keeps no user namespace and a tiny
  launcher switches to a random high uid/gid (no groups, no capabilities, no_new_privs) before
  the code starts, so RLIMIT_NPROC really applies (root and a uid mapped to root ignore it) and
  parallel sandboxes never share a process budget. Run as a normal user, bwrap maps uid 65534
  onto that user in a new user namespace and forbids nested user namespaces.
- limits set by the launcher inside the sandbox: RLIMIT_AS and RLIMIT_FSIZE (`memory_mb`,
  per process / per file), RLIMIT_CPU (`cpu_s`), RLIMIT_NPROC (`max_processes`, threads
  included), no core dumps; a wall-clock timeout (`timeout_s`) kills the process group.
- file system: `/` read-only; `/tmp` (with the working directory `/tmp/work`, holding
  `main.py`) and `/dev/shm`
  are fresh tmpfs of `memory_mb` each, gone with the sandbox; `/run` and non-world-searchable
  directories such as `/root` are hidden (only the interpreter's own prefix is shown again).
- output: stdout and stderr are read incrementally and each kept to `max_output_bytes`; past
  that the sandbox is killed, so a gigabyte of output costs the caller nothing.
- environment: a fixed minimal set (PATH, HOME=/tmp, ...); no host variables (API keys) leak.

What it does NOT isolate:

- reading: every world-readable file on the host is readable through the read-only bind of
  `/` (source trees, world-readable configs); keep secrets in files only their owner can read.
- the kernel: the code talks to the host kernel directly (no seccomp filter), so a kernel bug
  is a way out. As root the code may still create nested user namespaces (more kernel
  surface, and a tmpfs mounted in one is not size-capped); as a normal user bwrap forbids it.
- total memory: RLIMIT_AS is per process and there is no cgroup, so the worst case is about
  `max_processes * memory_mb` plus the two tmpfs, memfds and nested mounts. Use a container
  or cgroup with a memory limit around the whole run when that matters.
- side channels: CPU caches, timing, and what /proc and /sys say about the host hardware.
- world-writable unix sockets outside `/run` stay reachable (connect ignores read-only mounts).

Example (needs bubblewrap):

    >>> import asyncio
    >>> from agentmill.rollout.configs import PythonToolConfig
    >>> asyncio.run(run_python("print(6 * 7)", PythonToolConfig())).stdout
    '42\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentmill.errors import UserError
from agentmill.rollout.configs import PythonToolConfig
from agentmill.rollout.tools import ToolError

NEEDS_BWRAP = (
    "the python tool needs bubblewrap: apt-get install bubblewrap "
    "(or run where user namespaces are allowed)"
)
SANDBOX_UIDS = range(0x1000000, 0x2000000)  # run as root, each sandbox gets one at random
_CHUNK = 65536
_MEMORY_SIGNS = ("MemoryError", "Cannot allocate memory", "bad_alloc", "out of memory")
# Runs inside the sandbox before the model's code: limits first (RLIMIT_NPROC must be set
# while still root), then drop to the sandbox uid, then exec the interpreter.
_LAUNCHER = """
import os, resource, sys
limits, uid, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
for item in limits.split(","):
    name, soft, hard = item.split(":")
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(soft), int(hard)))
if uid >= 0:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
os.execv(argv[0], argv)
"""


@dataclass
class SandboxResult:
    """What one sandboxed run left behind.

    `exit_code` follows the shell: 128+N when the code died of signal N inside the sandbox,
    negative when we killed the sandbox (`killed_reason` says why: "timeout", "memory",
    "cpu" or "output_limit"). `truncated`: a stream was cut at `max_output_bytes`.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    truncated: bool = False
    killed_reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when the code ran to the end and exited 0."""
        return self.exit_code == 0 and self.killed_reason is None


class PythonTool:
    """Runs the `code` argument with `run_python` and shows output, status and limits hit."""

    def __init__(self, cfg: PythonToolConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name

    def schema(self) -> dict[str, Any]:
        cfg = self.cfg
        description = (
            "Run a Python 3 program in a sandbox and return what it prints (use print()). "
            f"No network; files can be written only under /tmp and vanish afterwards. "
            f"Limits: {cfg.timeout_s:g} s, {cfg.memory_mb} MB."
        )
        code = {"type": "string", "description": "the complete program to run"}
        parameters = {"type": "object", "properties": {"code": code}, "required": ["code"]}
        return {
            "type": "function",
            "function": {"name": self.name, "description": description, "parameters": parameters},
        }

    async def call(self, arguments: dict[str, Any]) -> str:
        code = arguments.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ToolError("`code` must be a non-empty string of Python source")
        return observation(await run_python(code, self.cfg), self.cfg)


def build(cfg: PythonToolConfig) -> list[PythonTool]:
    """The tool for the agent loop; fails here, at startup, when the sandbox cannot work."""
    check_sandbox(_interpreter(cfg))
    return [PythonTool(cfg)]


def observation(result: SandboxResult, cfg: PythonToolConfig) -> str:
    """The text the model reads: stdout, labelled stderr, then status lines.

    >>> observation(SandboxResult("hi\\n", "", 3), PythonToolConfig())
    'hi\\n[exit status 3]'
    """
    parts = [result.stdout.rstrip("\n")] if result.stdout else []
    if result.stderr:
        parts.append("[stderr]\n" + result.stderr.rstrip("\n"))
    reasons = {
        "timeout": f"wall-clock timeout after {cfg.timeout_s:g} s",
        "memory": f"memory limit {cfg.memory_mb} MB",
        "cpu": f"CPU time limit {cfg.cpu_s} s",
        "output_limit": f"output over {cfg.max_output_bytes} bytes",
    }
    if result.killed_reason:
        parts.append(f"[killed: {reasons.get(result.killed_reason, result.killed_reason)}]")
    elif result.exit_code:
        parts.append(f"[exit status {result.exit_code}]")
    if result.truncated:
        parts.append(f"[output truncated to {cfg.max_output_bytes} bytes per stream]")
    return "\n".join(parts) or "(no output)"


async def run_python(code: str, cfg: PythonToolConfig, stdin: str | None = None) -> SandboxResult:
    """Run `code` as `python main.py` in a fresh sandbox, feeding `stdin` if given.

    Never runs unsandboxed: without a working bubblewrap it raises `UserError`.
    """
    python = _interpreter(cfg)
    await asyncio.to_thread(check_sandbox, python)
    with tempfile.TemporaryDirectory(prefix="agentmill-py-") as host_dir:
        script = Path(host_dir) / "main.py"
        script.write_bytes(code.encode("utf-8", errors="replace"))  # lone surrogates happen
        script.chmod(0o644)  # read by the sandbox uid through a bind mount
        argv = _command(cfg, python, script)
        data = None if stdin is None else stdin.encode("utf-8", errors="replace")
        return await _supervise(argv, _environment(python), cfg, data)


@functools.cache
def check_sandbox(python: str) -> None:
    """Start one sandbox running `python -c pass`; raise a one-line `UserError` if it fails."""
    if shutil.which("bwrap") is None:
        raise UserError(NEEDS_BWRAP)
    with tempfile.TemporaryDirectory(prefix="agentmill-py-") as host_dir:
        script = Path(host_dir) / "main.py"
        script.write_text("pass\n")
        script.chmod(0o644)
        argv = _command(PythonToolConfig(), python, script)
        done = subprocess.run(argv, capture_output=True, env=_environment(python), timeout=60)
    if done.returncode == 0:
        return
    lines = done.stderr.decode(errors="replace").strip().splitlines() or ["no message"]
    if lines[0].startswith("bwrap:"):
        raise UserError(f"{NEEDS_BWRAP}; {lines[0]}")
    raise UserError(
        f"the python tool's interpreter {python} does not start in the sandbox ({lines[-1]}); "
        "set `python` to an interpreter under a world-readable directory"
    )


def _interpreter(cfg: PythonToolConfig) -> str:
    python = (shutil.which(cfg.python) or cfg.python) if cfg.python else sys.executable
    if not python or not Path(python).exists():
        raise UserError(f"python tool: interpreter {python!r} not found; set `python` to one")
    return str(Path(python).absolute())


def _environment(python: str) -> dict[str, str]:
    """The sandbox's whole environment: nothing of the host's (API keys) gets through."""
    return {
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": WORKDIR,
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",  # what was printed before a kill still reaches the model
        "PYTHONDONTWRITEBYTECODE": "1",
        "OMP_NUM_THREADS": "1",  # BLAS thread pools would eat the process budget
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


WORKDIR = "/tmp/work"


def _command(cfg: PythonToolConfig, python: str, script: Path) -> list[str]:
    mib = cfg.memory_mb * 1024 * 1024
    argv = ["bwrap", "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
    argv += ["--unshare-cgroup-try", "--hostname", "sandbox", "--new-session", "--die-with-parent"]
    root = os.geteuid() == 0
    if root:  # no user namespace: it would map the sandbox uid to root, exempt from NPROC
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--uid", "65534", "--gid", "65534", "--disable-userns"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/run"]
    argv += ["--perms", "1777", "--size", str(mib), "--tmpfs", "/dev/shm"]
    argv += ["--perms", "1777", "--size", str(mib), "--tmpfs", "/tmp"]
    argv += _reveal(_interpreter_dirs(python))
    # A folder of its own inside the fresh /tmp: the interpreter's prefix may itself live
    # under /tmp (a venv in a CI checkout there) and is bound back into /tmp above.
    argv += ["--perms", "1777", "--dir", WORKDIR]
    argv += ["--ro-bind", str(script), f"{WORKDIR}/main.py", "--chdir", WORKDIR, "--"]
    uid = SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))] if root else -1
    launcher = [python, "-I", "-S", "-c", _LAUNCHER, _limits(cfg), str(uid)]
    return [*argv, *launcher, python, "-B", "main.py"]


def _limits(cfg: PythonToolConfig) -> str:
    mib = cfg.memory_mb * 1024 * 1024
    # the CPU hard limit one second later turns an ignored SIGXCPU into SIGKILL
    limits = {"AS": (mib, mib), "FSIZE": (mib, mib), "CPU": (cfg.cpu_s, cfg.cpu_s + 1)}
    limits["CORE"] = (0, 0)
    limits["NPROC"] = (cfg.max_processes, cfg.max_processes)
    return ",".join(f"{name}:{soft}:{hard}" for name, (soft, hard) in limits.items())


def _interpreter_dirs(python: str) -> set[Path]:
    """The prefixes the interpreter loads from; they must stay visible inside the sandbox."""
    dirs = {Path(python).parent.parent, Path(python).resolve().parent.parent}
    if Path(python).resolve() == Path(sys.executable).resolve():
        dirs |= {Path(p).resolve() for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix)}
    dirs = {d for d in dirs if d.is_dir()}
    return {d for d in dirs if not any(o != d and o in d.parents for o in dirs)}


def _reveal(dirs: set[Path]) -> list[str]:
    """Hide each closed directory on the way (e.g. /root, 0700) behind an empty tmpfs, then
    bind the interpreter's prefix back read-only, with searchable directories leading to it."""
    args: list[str] = []
    hidden = {Path("/tmp"), Path("/run"), Path("/dev/shm")}  # already fresh tmpfs
    for target in sorted(dirs):
        chain = [*reversed(target.parents), target]
        top = next((d for d in chain if d in hidden or not os.stat(d).st_mode & 0o001), None)
        if top is None:
            continue
        if top not in hidden:
            hidden.add(top)
            args += ["--perms", "0755", "--tmpfs", str(top)]
        for d in chain[chain.index(top) + 1 : -1]:
            args += ["--perms", "0755", "--dir", str(d)]
        args += ["--ro-bind", str(target), str(target)]
    return args


class _Capture:
    """Keeps the first `limit` bytes of a stream and notes that more came."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.overflow = False

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        self.data += chunk[: max(room, 0)]
        self.overflow = self.overflow or len(chunk) > room

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


async def _pump(stream: asyncio.StreamReader, capture: _Capture, flood: asyncio.Event) -> None:
    while chunk := await stream.read(_CHUNK):
        capture.add(chunk)
        if capture.overflow:
            flood.set()


async def _feed(proc: asyncio.subprocess.Process, data: bytes | None) -> None:
    if proc.stdin is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        proc.stdin.write(data or b"")
        await proc.stdin.drain()
        proc.stdin.close()


async def _supervise(
    argv: list[str], env: dict[str, str], cfg: PythonToolConfig, stdin: bytes | None
) -> SandboxResult:
    out, err = _Capture(cfg.max_output_bytes), _Capture(cfg.max_output_bytes)
    flood = asyncio.Event()
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,  # one process group: killpg reaches bwrap and, through it, all
    )
    assert proc.stdout is not None and proc.stderr is not None
    tasks = [
        asyncio.create_task(_pump(s, c, flood)) for s, c in ((proc.stdout, out), (proc.stderr, err))
    ]
    tasks.append(asyncio.create_task(_feed(proc, stdin)))
    try:
        reason = await _wait(proc, flood, cfg.timeout_s)
    finally:
        # also when we are cancelled: a sandbox never outlives its caller
        _kill(proc)
        code = await proc.wait()
        await _drain(tasks)
    return _result(out, err, code, reason)


async def _wait(
    proc: asyncio.subprocess.Process, flood: asyncio.Event, timeout: float
) -> str | None:
    """None when the code exits by itself; else why we must kill it."""
    exited = asyncio.ensure_future(proc.wait())
    flooded = asyncio.ensure_future(flood.wait())
    try:
        done, _ = await asyncio.wait(
            {exited, flooded}, timeout=timeout, return_when="FIRST_COMPLETED"
        )
    finally:
        exited.cancel()
        flooded.cancel()
    if exited in done:
        return None
    return "output_limit" if flooded in done else "timeout"


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # bwrap's --die-with-parent takes the rest


async def _drain(tasks: list[asyncio.Task[None]]) -> None:
    """The pipes close when the sandbox's pid namespace dies; don't hang if one lingers."""
    _, pending = await asyncio.wait(tasks, timeout=5)
    for task in pending:
        task.cancel()


def _result(out: _Capture, err: _Capture, code: int, reason: str | None) -> SandboxResult:
    stderr = err.text()
    if reason is None and code == 128 + signal.SIGXCPU:
        reason = "cpu"
    elif reason is None and code != 0 and any(s in stderr[-2000:] for s in _MEMORY_SIGNS):
        reason = "memory"
    truncated = out.overflow or err.overflow
    return SandboxResult(out.text(), stderr, code, reason == "timeout", truncated, reason)
