"""Abusive requests against a real `regulus serve` process: what they cost the server.

Starts `regulus serve` (as `python -m api.cli.main serve`, this checkout's code) over a fresh,
empty data folder and measures its resident memory while one client sends

- a multipart body of `--mb` MiB (default 500) to /v1/query and to /v1/ingest/jobs with no API
  key, to /v1/query with an analyst's key, and as an upload to /v1/ingest/jobs with an admin's key
  (the server runs with `REGULUS_MAX_UPLOAD_MB=--upload-limit-mb`, default 100, so the upload is
  over the limit); each once with a Content-Length and once chunked (no length declared);
- a flood of `--flood` requests (default 2,000) with wrong keys from one client address, one
  after the other on one connection: 401 vs 429, requests/s, audit rows written.

Bodies are generated on the fly (one 1 MiB block sent over and over), so the client holds none
of them; the client keeps sending the whole body however early the server answers, as an
attacker would. The server's RSS is sampled every 5 ms in a thread during each request.
"server read" is the growth of the process's read_chars (/proc/<pid>/io: every byte it read
from sockets and files), so it includes what uvicorn read and threw away after the response.
Figures only; nothing here asserts a limit.

Run: .venv/bin/python benchmarks/request_abuse.py [--mb 500] [--upload-limit-mb 100]
     [--flood 2000]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx
import psutil

from api.cli.admin import sql_stores
from core.audit import AuditEvent
from core.models import Role
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
BLOCK = b"x" * 2**20  # the body's payload, sent again and again
BOUNDARY = "abuse0boundary"
MIB = 2**20
FLOODER = "127.0.0.2"  # the flood's client address; the big bodies come from 127.0.0.1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(data_dir: Path, port: int, upload_limit_mb: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
        "REGULUS_DATA_DIR": str(data_dir),
        "REGULUS_MAX_UPLOAD_MB": str(upload_limit_mb),
    }
    command = [sys.executable, "-m", "api.cli.main", "serve", "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_until_serving(url: str, server: subprocess.Popen[bytes], timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not serve within {timeout_s} s")


class PeakRss:
    """The process's largest RSS while the block runs, sampled in a thread."""

    def __init__(self, process: psutil.Process, every_s: float = 0.005) -> None:
        self.process = process
        self.every_s = every_s
        self.before = self.peak = process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        time.sleep(0.2)  # whatever the request left behind, after its response
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def multipart_body(mib: int) -> tuple[bytes, bytes, int]:
    """The head and tail around `mib` MiB of file content, and the body's whole length."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="big.md"\r\n'
        "Content-Type: text/markdown\r\n\r\n"
    ).encode()
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    return head, tail, len(head) + mib * MIB + len(tail)


@dataclass
class Outcome:
    status: int | None = None
    code: str = ""
    answered_s: float | None = None  # from the first byte sent to the response's status line
    sent_before_answer: int | None = None
    sent: int = 0
    total_s: float = 0.0
    stopped: str = ""  # why the client could not send the whole body


def send_big(
    address: tuple[str, int], path: str, key: str | None, mib: int, declare_length: bool
) -> Outcome:
    """POST a `mib` MiB multipart body, reading the response as soon as it comes."""
    head, tail, length = multipart_body(mib)
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {address[0]}:{address[1]}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {length}" if declare_length else "Transfer-Encoding: chunked",
    ]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    outcome = Outcome()
    answered = threading.Event()
    sock = socket.create_connection(address, source_address=("127.0.0.1", 0))
    start = time.perf_counter()

    def read_response() -> None:
        response = http.client.HTTPResponse(sock)
        try:
            response.begin()
            outcome.status = response.status
            outcome.answered_s = time.perf_counter() - start
            outcome.sent_before_answer = outcome.sent
            answered.set()
            try:
                outcome.code = json.loads(response.read())["error"]["code"]
            except (ValueError, KeyError, TypeError):
                outcome.code = "(not the error body)"
        except (OSError, http.client.HTTPException) as error:
            outcome.code = f"no response: {error!r}"
        finally:
            answered.set()

    reader = threading.Thread(target=read_response, daemon=True)
    reader.start()

    def pieces() -> Iterator[bytes]:
        yield head
        for _ in range(mib):
            yield BLOCK
        yield tail

    try:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for piece in pieces():
            if declare_length:
                sock.sendall(piece)
            else:
                sock.sendall(f"{len(piece):x}\r\n".encode())
                sock.sendall(piece)
                sock.sendall(b"\r\n")
            outcome.sent += len(piece)
        if not declare_length:
            sock.sendall(b"0\r\n\r\n")
    except OSError as error:
        outcome.stopped = type(error).__name__
    answered.wait(timeout=300)
    outcome.total_s = time.perf_counter() - start
    sock.close()
    reader.join(timeout=5)
    return outcome


@dataclass
class Flood:
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: float = 0.0
    audit_since: int = 0  # the last audit row before the flood
    rows_during: int = 0
    rows_after: int = 0
    counted_after: int = 0
    growth: int = 0
    peak: int = 0


def denial_rows(settings: Settings, since_id: int, client: str) -> tuple[int, int]:
    """auth.denied rows of `client` after `since_id`, and the refusals they account for."""
    with sql_stores(settings) as (_, audit):
        rows = [
            e
            for e in audit.export()
            if e.id > since_id
            and e.event == AuditEvent.DENIED.value
            and e.detail.get("client") == client
        ]
    return len(rows), sum(int(e.detail.get("repeated", 1)) for e in rows)


def last_audit_id(settings: Settings) -> int:
    with sql_stores(settings) as (_, audit):
        return max((e.id for e in audit.export()), default=0)


def flood(url: str, requests: int, process: psutil.Process, settings: Settings) -> Flood:
    """`requests` wrong keys one after the other from 127.0.0.2 (the body cases used .1)."""
    result = Flood()
    since = result.audit_since = last_audit_id(settings)
    transport = httpx.HTTPTransport(local_address=FLOODER)
    with (
        httpx.Client(base_url=url, transport=transport, timeout=30) as client,
        PeakRss(process) as rss,
    ):
        start = time.perf_counter()
        for n in range(requests):
            wrong = {"Authorization": f"Bearer rk_wrong{n:06d}"}
            result.statuses[client.get("/v1/documents", headers=wrong).status_code] += 1
        result.seconds = time.perf_counter() - start
    result.growth, result.peak = rss.peak - rss.before, rss.peak
    result.rows_during, _ = denial_rows(settings, since, FLOODER)
    return result


def mb(value: float) -> str:
    return f"{value / MIB:,.0f}"


def measure(data_dir: Path, args: argparse.Namespace) -> tuple[list[tuple[str, ...]], Flood]:
    """The rows of the body cases and the flood's figures, from a server over `data_dir`."""
    settings = Settings(_env_file=None, data_dir=data_dir)
    with sql_stores(settings) as (keys, _):
        admin = keys.create(Role.ADMIN, ["public"], name="bench-admin")[1]
        analyst = keys.create(Role.ANALYST, ["public"], name="bench-analyst")[1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    server = start_server(data_dir, port, args.upload_limit_mb)
    rows: list[tuple[str, ...]] = []
    try:
        wait_until_serving(url, server)
        print(f"server up in {time.perf_counter() - started:.0f} s (pid {server.pid})", flush=True)
        process = psutil.Process(server.pid)
        cases = [
            ("no key, /v1/query", "/v1/query", None),
            ("no key, /v1/ingest/jobs", "/v1/ingest/jobs", None),
            ("analyst key, /v1/query", "/v1/query", analyst),
            (f"admin upload over {args.upload_limit_mb:g} MiB", "/v1/ingest/jobs", admin),
        ]
        for name, path, key in cases:
            for declare in (True, False):
                read_before = process.io_counters().read_chars
                with PeakRss(process) as rss:
                    outcome = send_big(("127.0.0.1", port), path, key, args.mb, declare)
                read = process.io_counters().read_chars - read_before
                label = f"{name}, {'Content-Length' if declare else 'chunked'}"
                answered = (
                    f"{outcome.answered_s:.2f} s after {mb(outcome.sent_before_answer or 0)} MiB"
                    if outcome.answered_s is not None
                    else "none"
                )
                rows.append(
                    (
                        label,
                        f"{outcome.status} {outcome.code}",
                        mb(rss.before),
                        mb(rss.peak),
                        f"{(rss.peak - rss.before) / MIB:+.1f}",
                        mb(read),
                        answered,
                        f"{mb(outcome.sent)} MiB in {outcome.total_s:.1f} s"
                        + (f" ({outcome.stopped})" if outcome.stopped else ""),
                    )
                )
                print(" | ".join(rows[-1]), flush=True)
        result = flood(url, args.flood, process, settings)
    finally:
        server.terminate()
        server.wait(timeout=60)
    # The server's shutdown writes the counts of the refusals it coalesced.
    result.rows_after, result.counted_after = denial_rows(settings, result.audit_since, FLOODER)

    return rows, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=500, help="MiB of each abusive body.")
    parser.add_argument("--upload-limit-mb", type=float, default=100.0)
    parser.add_argument("--flood", type=int, default=2000, help="Requests with wrong keys.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="regulus-abuse-") as folder:
        rows, result = measure(Path(folder), args)

    print(f"\n{args.mb} MiB bodies, upload limit {args.upload_limit_mb:g} MiB:\n")
    print(
        "| case | status | RSS before MiB | peak MiB | growth MiB | server read MiB "
        "| response | client sent |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nFailed-auth flood, {args.flood} wrong keys from one address, one connection:\n")
    statuses = ", ".join(f"{status}: {n}" for status, n in sorted(result.statuses.items()))
    print(f"- statuses: {statuses}")
    print(f"- {args.flood / result.seconds:,.0f} requests/s ({result.seconds:.1f} s)")
    print(f"- RSS growth {result.growth / MIB:+.1f} MiB (peak {mb(result.peak)} MiB)")
    print(
        f"- auth.denied audit rows: {result.rows_during} during the flood, {result.rows_after} "
        f"after shutdown, accounting for {result.counted_after} refusals"
    )


if __name__ == "__main__":
    main()
