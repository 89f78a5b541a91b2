"""Orchestration overhead: `OpenAIBackend` + the run store against a 200 ms fake server.

    .venv/bin/python bench/orchestration.py [--requests 5000] [--json bench-orchestration.json]

The stub server (agentmill.testing.stub_server, a FAKE that echoes after a fixed delay) runs
in its own process pinned to core 1; this process pins itself to core 0. For each concurrency
c, c workers send `--requests` chat requests through the backend and append each Completion
as one record line with `agentmill.store.JsonlWriter`. The same is done with the stock
`openai.AsyncOpenAI` client (max_retries=0, its default httpx transport, with the pool limits
raised to c connections so it is not throttled by its own keep-alive cap) as the baseline.
A "raw-socket" row drives the stub with a minimal hand-written HTTP/1.1 client (no library,
no store) to show what the stub server itself sustains.

Each measured pass is preceded by an unmeasured warm-up of c requests, so connection setup is
not counted: the figures are steady-state. Ideal wall time is ceil(requests / c) * latency
(the server cannot answer faster); "fraction" is ideal / measured wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from agentmill.backends.openai import OpenAIBackend
from agentmill.config import OpenAIBackendConfig
from agentmill.records import Message, SamplingParams

SYSTEM = "You are a careful assistant. Answer briefly and show the final answer on its own line."
Call = Callable[[int], Awaitable[bytes]]


class Store:
    """The run store's record writer (falls back to a plain file while store.py is missing)."""

    def __init__(self, path: Path):
        try:
            from agentmill.store import JsonlWriter
        except ImportError:
            self.kind = "plain file"
            self._f = path.open("ab", buffering=0)
            self.append: Callable[[bytes], Any] = lambda b: self._f.write(b + b"\n")
        else:
            self.kind = "agentmill.store.JsonlWriter"
            self.append = JsonlWriter(path).append


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds the server process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(latency_ms: float, cpu: int) -> tuple[subprocess.Popen[str], str]:
    cmd = [
        sys.executable,
        "-m",
        "agentmill.testing.stub_server",
        "--port",
        "0",
        "--latency-ms",
        str(latency_ms),
        "--cpu",
        str(cpu),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        proc.kill()
        raise SystemExit(f"stub server did not start: {url!r}")
    return proc, url


async def drive(call: Call, concurrency: int, n: int, store: Store) -> dict[str, Any]:
    """Run n calls with `concurrency` workers; per-request latency and store write time."""
    latencies: list[float] = []
    store_ns = 0
    next_i = 0

    async def worker() -> None:
        nonlocal next_i, store_ns
        while next_i < n:
            i, next_i = next_i, next_i + 1
            t0 = time.perf_counter()
            record = await call(i)
            latencies.append(time.perf_counter() - t0)
            w0 = time.perf_counter_ns()
            store.append(record)
            store_ns += time.perf_counter_ns() - w0

    t0, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {
        "wall_s": time.perf_counter() - t0,
        "client_cpu_s": time.process_time() - cpu0,
        "latencies": latencies,
        "store_us": store_ns / 1000 / max(1, len(latencies)),
    }


Closer = Callable[[], Awaitable[None]]


def agentmill_call(url: str, concurrency: int, tag: str) -> tuple[Call, Closer]:
    cfg = OpenAIBackendConfig(
        base_url=url, model="stub", max_concurrency=concurrency, timeout_s=60, max_retries=0
    )
    backend = OpenAIBackend("bench", cfg)
    params = SamplingParams(temperature=0.0, max_tokens=64)
    system = Message(role="system", content=SYSTEM)

    async def call(i: int) -> bytes:
        msgs = [system, Message(role="user", content=f"{tag} request {i}: what is {i} + {i}?")]
        completion = await backend.complete(msgs, None, params)
        return completion.model_dump_json().encode()

    return call, backend.aclose


def openai_call(url: str, concurrency: int, tag: str) -> tuple[Call, Closer]:
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="bench",
        max_retries=0,
        timeout=60,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits),
    )

    async def call(i: int) -> bytes:
        resp = await client.chat.completions.create(
            model="stub",
            temperature=0.0,
            max_tokens=64,
            messages=[
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{tag} request {i}: what is {i} + {i}?"},
            ],
        )
        return resp.model_dump_json().encode()

    return call, client.close


class RawJob:
    """Shared state of a raw-socket run: which request is next, and what came back."""

    def __init__(self, n: int, tag: str, loop: asyncio.AbstractEventLoop):
        self.n, self.tag, self.next_i, self.done = n, tag, 0, 0
        self.latencies: list[float] = []
        self.finished: asyncio.Future[None] = loop.create_future()


class RawConnection(asyncio.Protocol):
    """A minimal HTTP/1.1 keep-alive client (no library), used only to find out how much the
    stub server itself can take, so the other rows can be read against it."""

    def __init__(self, job: RawJob):
        self.job, self.buf, self.sent_at = job, b"", 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self) -> None:
        job = self.job
        if job.next_i >= job.n or self.transport is None:
            return
        body = orjson.dumps(
            {
                "model": "stub",
                "max_tokens": 64,
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": f"{job.tag} request {job.next_i}"},
                ],
            }
        )
        job.next_i += 1
        self.sent_at = time.perf_counter()
        self.transport.write(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: stub\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        length = _content_length(self.buf[:end]) if end >= 0 else None
        if length is None or len(self.buf) < end + 4 + length:
            return
        self.buf = self.buf[end + 4 + length :]
        job = self.job
        job.latencies.append(time.perf_counter() - self.sent_at)
        job.done += 1
        if job.done == job.n:
            job.finished.set_result(None)
        self.send()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


async def drive_raw(url: str, concurrency: int, n: int, tag: str) -> dict[str, Any]:
    """Like `drive`, over raw keep-alive sockets: a warm-up of one request per connection,
    then n measured requests."""
    loop = asyncio.get_running_loop()
    host, port = url.split("//")[1].split("/")[0].split(":")
    job = RawJob(concurrency, tag + "-warm", loop)
    conns = [
        (await loop.create_connection(lambda: RawConnection(job), host, int(port)))[1]
        for _ in range(concurrency)
    ]
    for conn in conns:
        conn.send()
    await job.finished
    job = RawJob(n, tag, loop)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for conn in conns:
        conn.job = job
        conn.send()
    await job.finished
    res = {
        "wall_s": time.perf_counter() - t0,
        "client_cpu_s": time.process_time() - cpu0,
        "latencies": job.latencies,
        "store_us": 0.0,
    }
    for conn in conns:
        assert conn.transport is not None
        conn.transport.close()
    return res


async def run_phase(
    client: str, concurrency: int, args: argparse.Namespace, url: str, store: Store, server_pid: int
) -> dict[str, Any]:
    if client == "raw-socket":
        s0 = server_cpu_s(server_pid)
        res = await drive_raw(url, concurrency, args.requests, f"raw-{concurrency}")
        return summarize(client, concurrency, args, res, server_cpu_s(server_pid) - s0)
    make = agentmill_call if client == "agentmill" else openai_call
    tag = f"{client}-{concurrency}"
    call, close = make(url, concurrency, tag)
    warm = min(concurrency, args.requests)
    await drive(lambda i: call(args.requests + i), concurrency, warm, store)
    s0 = server_cpu_s(server_pid)
    res = await drive(call, concurrency, args.requests, store)
    server_cpu = server_cpu_s(server_pid) - s0
    await close()
    return summarize(client, concurrency, args, res, server_cpu)


def summarize(
    client: str, concurrency: int, args: argparse.Namespace, res: dict[str, Any], server_cpu: float
) -> dict[str, Any]:
    latency = args.latency_ms / 1000
    added = sorted(x - latency for x in res["latencies"])
    ideal_wall = math.ceil(args.requests / concurrency) * latency
    wall = res["wall_s"]
    return {
        "client": client,
        "concurrency": concurrency,
        "requests": args.requests,
        "wall_s": round(wall, 3),
        "req_per_s": round(args.requests / wall, 1),
        "ideal_req_per_s": round(args.requests / ideal_wall, 1),
        "fraction_of_ideal": round(ideal_wall / wall, 3),
        "p50_added_ms": round(1000 * added[len(added) // 2], 2),
        "p99_added_ms": round(1000 * added[min(len(added) - 1, int(len(added) * 0.99))], 2),
        "store_us_per_record": round(res["store_us"], 2),
        "client_cpu_us_per_req": round(1e6 * res["client_cpu_s"] / args.requests, 1),
        "client_cpu_pct": round(100 * res["client_cpu_s"] / wall, 1),
        "server_cpu_pct": round(100 * server_cpu / wall, 1),
    }


async def run_all(
    args: argparse.Namespace, url: str, store: Store, pid: int
) -> list[dict[str, Any]]:
    plan = [("agentmill", c) for c in args.concurrency]
    plan += [("openai", c) for c in args.baseline_concurrency]
    plan += [("raw-socket", c) for c in args.server_check_concurrency]
    return [await run_phase(client, c, args, url, store, pid) for client, c in plan]


def print_table(rows: list[dict[str, Any]], store_kind: str, console: Console) -> None:
    table = Table(
        title=f"Orchestration vs a {rows[0]['requests']}-request, fixed-latency stub "
        f"(store: {store_kind})"
    )
    cols = [
        ("client", "client"),
        ("concurrency", "conc"),
        ("req_per_s", "req/s"),
        ("ideal_req_per_s", "ideal req/s"),
        ("fraction_of_ideal", "fraction"),
        ("p50_added_ms", "p50 added ms"),
        ("p99_added_ms", "p99 added ms"),
        ("store_us_per_record", "store µs/rec"),
        ("client_cpu_us_per_req", "client CPU µs/req"),
        ("client_cpu_pct", "client CPU %"),
        ("server_cpu_pct", "server CPU %"),
    ]
    for _, title in cols:
        table.add_column(title, justify="right")
    for row in sorted(rows, key=lambda r: (r["concurrency"], r["client"])):
        table.add_row(*(str(row[k]) for k, _ in cols))
    console.print(table)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=5000)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--concurrency", type=int, nargs="*", default=[64, 256, 1024])
    p.add_argument("--baseline-concurrency", type=int, nargs="*", default=[64, 256])
    p.add_argument(
        "--server-check-concurrency",
        type=int,
        nargs="*",
        default=[1024],
        help="also drive the stub over raw sockets (no client library, no store) "
        "to show what the server alone sustains",
    )
    p.add_argument("--json", type=Path, default=None, help="save the figures here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.sched_setaffinity(0, {0})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    proc, url = start_server(args.latency_ms, cpu=1)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "records.jsonl")
            rows = asyncio.run(run_all(args, url, store, proc.pid))
    finally:
        proc.terminate()
        proc.wait(10)
    print_table(rows, store.kind, Console(width=160))
    if args.json:
        meta = {"store": store.kind, "latency_ms": args.latency_ms, "cpu": _cpu_name()}
        data = {"meta": meta, "rows": rows}
        args.json.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
