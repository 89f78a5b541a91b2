"""Session fixtures for tests that use the real embedded model (SmolLM2-135M).

Loaded by tests/conftest.py through `pytest_plugins = ["model_fixtures"]`.

- `smollm_path`: the converted model folder (converted once per machine into the agentmill cache).
- `local_backend`: one `LocalBackend` shared by the session, model loaded once; usable from
  each test's own `asyncio.run` loop.
- `loopback_server`: base URL (".../v1") of a real `transformers serve` subprocess on loopback.
  Requests may send `model` as `str(smollm_path)` or leave it out.

Where the model's package or the serving extra is missing, these tests FAIL with the install
hint (never skip silently): `make test` installs both.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentmill.backends.local import LocalBackend
from agentmill.config import LocalBackendConfig
from agentmill.errors import UserError
from agentmill.models import resolve_model

EMBEDDED_ALIAS = "smollm2-135m"
SERVER_START_TIMEOUT_S = 120.0

# Nothing in the test session may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The folder of the converted embedded model (config.json, safetensors, tokenizer)."""
    try:
        return resolve_model(EMBEDDED_ALIAS)
    except UserError as e:  # the GGUF package or the local extra is not installed
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def local_backend(smollm_path: Path) -> Iterator[LocalBackend]:
    """A loaded `LocalBackend` on the embedded model, shared by every test of the session."""
    backend = LocalBackend("local", LocalBackendConfig(model=EMBEDDED_ALIAS, batch_wait_ms=20))
    backend.load()
    yield backend
    asyncio.run(backend.aclose())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_command() -> list[str]:
    exe = shutil.which("transformers") or str(Path(sys.executable).parent / "transformers")
    if not Path(exe).exists():
        pytest.fail("the transformers CLI is missing: pip install 'agentmill[serve]'")
    return [exe, "serve"]


def _log_tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(errors="replace") if log.exists() else ""
    return "\n".join(text.splitlines()[-lines:])


def _answers(base_url: str) -> bool:
    """True once a one-token chat completion comes back 200."""
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    req = urllib.request.Request(
        f"{base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_ready(proc: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"transformers serve exited with {proc.returncode}:\n{_log_tail(log)}")
        if _answers(base_url):
            return
        time.sleep(0.5)
    waited = f"{SERVER_START_TIMEOUT_S:.0f} s"
    pytest.fail(f"transformers serve not ready in {waited}:\n{_log_tail(log)}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the server's whole process group, then kill it if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


@pytest.fixture(scope="session")
def loopback_server(smollm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (ending in /v1) of `transformers serve <smollm_path>` on a free loopback port."""
    port = free_port()
    work = tmp_path_factory.mktemp("transformers_serve")
    (work / "hub").mkdir()
    log = work / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(work / "hub")}
    cmd = [
        *_serve_command(),
        str(smollm_path),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        _wait_ready(proc, base_url, log)
        yield base_url
    finally:
        _stop(proc)
