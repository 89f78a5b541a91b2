"""A real headless chromium driven over the Chrome DevTools protocol (aiohttp websockets).

Registered in conftest.py (`pytest_plugins`); the `browser` fixture is session-scoped (one chromium for the session). When chromium is missing the fixture FAILS with
the install hint: `make test` installs it through apt, so a missing browser is a broken setup.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,900",
]


class Page:
    """One tab: load a file, evaluate JS, collect console errors, take screenshots."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, loop: asyncio.AbstractEventLoop):
        self.ws, self.loop = ws, loop
        self.errors: list[str] = []
        self._id = 0
        self._events: list[dict[str, Any]] = []

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _send(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        my_id = self._id
        await self.ws.send_json({"id": my_id, "method": method, "params": params})
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._on_event(msg)

    def _on_event(self, msg: dict[str, Any]) -> None:
        self._events.append(msg)
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append(str([a.get("value") for a in p.get("args", [])]))
        elif method == "Runtime.exceptionThrown":
            self.errors.append(str(p.get("exceptionDetails", {}).get("text")))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            self.errors.append(str(p["entry"].get("text")))

    async def _wait_event(self, method: str, fresh: bool = False) -> None:
        if not fresh and any(e.get("method") == method for e in self._events):
            return
        while True:
            msg = await asyncio.wait_for(self.ws.receive_json(), 30)
            self._on_event(msg)
            if msg.get("method") == method:
                return

    def open(self, path: Path) -> float:
        """Load a local file and wait until it is the loaded document; returns the seconds."""
        self.errors.clear()
        self._events.clear()
        url = path.resolve().as_uri()
        start = time.perf_counter()
        self._run(self._send("Page.navigate", url=url))
        self._run(self._wait_event("Page.loadEventFired"))
        # a late load event of the previous page must not count: check which document is up
        check = "document.readyState === 'complete' && location.href"
        while self.eval(check) != url:
            if time.perf_counter() - start > 30:
                raise RuntimeError(f"{url} did not load within 30 s")
            self._run(self._wait_event("Page.loadEventFired", fresh=True))
        return time.perf_counter() - start

    def eval(self, expression: str, await_promise: bool = False) -> Any:
        """The JSON value of a JS expression evaluated in the page (awaited if a promise)."""
        res = self._run(
            self._send(
                "Runtime.evaluate",
                expression=expression,
                returnByValue=True,
                awaitPromise=await_promise,
            )
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (`full_page`)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, document.body.scrollHeight]")
            params |= {
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
            }
        res = self._run(self._send("Page.captureScreenshot", **params))
        path.write_bytes(base64.b64decode(res["data"]))
        return path

    def click(self, selector: str) -> None:
        """A real mouse click (press and release) in the middle of the first match."""
        box = self.eval(
            f"(() => {{ const e = document.querySelector({selector!r}); e.scrollIntoView();"
            " const r = e.getBoundingClientRect();"
            " return [r.left + r.width / 2, r.top + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            self._run(
                self._send(
                    "Input.dispatchMouseEvent",
                    type=kind,
                    x=box[0],
                    y=box[1],
                    button="left",
                    clickCount=1,
                )
            )

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element and type `text` as key events (fires `input` like a user)."""
        self.eval(f"document.querySelector({selector!r}).focus()")
        self._run(self._send("Input.insertText", text=text))

    def settle(self) -> None:
        """Drain the events already sent (late console errors) with a round trip."""
        self.eval("1")


def _port(user_dir: Path, proc: subprocess.Popen) -> int:
    marker = user_dir / "DevToolsActivePort"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return int(marker.read_text().splitlines()[0])
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with code {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError("chromium did not write DevToolsActivePort within 30 s")


async def _connect(port: int) -> tuple[aiohttp.ClientSession, aiohttp.ClientWebSocketResponse]:
    session = aiohttp.ClientSession()
    async with session.get(f"http://127.0.0.1:{port}/json/list") as r:
        targets = [t for t in await r.json() if t.get("type") == "page"]
    if not targets:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as r:
            targets = [await r.json()]
    ws = await session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0)
    return session, ws


@pytest.fixture(scope="session")
def browser() -> Iterator[Page]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (make test does)")
    with launch(exe) as page:
        yield page


@contextlib.contextmanager
def launch(exe: str = "chromium") -> Iterator[Page]:
    """A fresh headless chromium (own profile folder) and its first tab, closed on exit."""
    user_dir = Path(tempfile.mkdtemp(prefix="agentmill-chromium-"))
    proc = subprocess.Popen(
        [exe, *FLAGS, f"--user-data-dir={user_dir}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    loop = asyncio.new_event_loop()
    try:
        session, ws = loop.run_until_complete(_connect(_port(user_dir, proc)))
        page = Page(ws, loop)
        for domain in ("Page", "Runtime", "Log"):
            loop.run_until_complete(page._send(f"{domain}.enable"))
        yield page
        loop.run_until_complete(ws.close())
        loop.run_until_complete(session.close())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        loop.close()
        shutil.rmtree(user_dir, ignore_errors=True)
