"""Load test: N concurrent analysts asking questions for a bounded time against a running API.

Each analyst asks, waits for the answer, and asks again (no think time by default). A 429 or 503
is load shedding, not an error: the analyst waits for Retry-After (capped by what time is left) and
goes on. Errors are everything else: other non-2xx statuses, timeouts and connection failures.

    # against a running server
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --users 20 --duration 60
    # or start `regulus local-llm` and `regulus serve` on DATA_DIR first (stopped at the end)
    python benchmarks/load_test.py --spawn DATA_DIR --users 20 --duration 60

Prints throughput, latency percentiles of answered questions, and counts by status.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

QUESTIONS = [
    "Within how many hours must a personal data breach be notified to the supervisory authority?",
    "When may personal data be transferred to a third country?",
    "What must a controller do before processing that is likely to result in a high risk?",
    "What information must be given to the data subject when data are collected?",
    "When is consent to the storing of information in terminal equipment required?",
    "What are the conditions for a child's consent in relation to information society services?",
    "When must a data protection officer be designated?",
    "What is the right to erasure?",
]


@dataclass
class Outcome:
    status: str  # an HTTP status, "timeout" or "connection_error"
    latency_s: float


@dataclass
class Results:
    outcomes: list[Outcome] = field(default_factory=list)

    def by_status(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)


async def analyst(
    client: httpx.AsyncClient,
    number: int,
    deadline: float,
    results: Results,
    budget: list[int],
    think_s: float,
) -> None:
    asked = number
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        question = QUESTIONS[asked % len(QUESTIONS)]
        asked += 1
        started = time.monotonic()
        retry_after = 0.0
        try:
            response = await client.post("/v1/query", json={"question": question})
            status = str(response.status_code)
            retry_after = float(response.headers.get("retry-after", 0) or 0)
        except httpx.TimeoutException:
            status = "timeout"
        except httpx.TransportError:
            status = "connection_error"
        results.outcomes.append(Outcome(status, time.monotonic() - started))
        pause = retry_after if status in ("429", "503") else think_s
        await asyncio.sleep(max(0.0, min(pause, deadline - time.monotonic())))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(share * 100) - 1]


async def run(
    url: str, users: int, duration_s: float, max_requests: int, timeout_s: float, think_s: float
) -> tuple[Results, float]:
    results = Results()
    budget = [max_requests]
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        started = time.monotonic()
        deadline = started + duration_s
        await asyncio.gather(
            *(analyst(client, n, deadline, results, budget, think_s) for n in range(users))
        )
        elapsed = time.monotonic() - started
    return results, elapsed


def report(results: Results, elapsed: float, users: int) -> None:
    counts = results.by_status()
    answered = [o.latency_s for o in results.outcomes if o.status == "200"]
    shed = [o.latency_s for o in results.outcomes if o.status in ("429", "503")]
    errors = {s: n for s, n in counts.items() if s not in ("200", "429", "503")}
    print(f"users: {users}; wall time: {elapsed:.1f} s; requests: {len(results.outcomes)}")
    print(f"answered (200): {len(answered)}  throughput: {len(answered) / elapsed:.2f} answers/s")
    if answered:
        print(
            f"latency of answers: p50 {percentile(answered, 0.50):.2f} s, "
            f"p95 {percentile(answered, 0.95):.2f} s, max {max(answered):.2f} s"
        )
    if shed:
        print(
            f"shed (429/503): {len(shed)}; answered in p50 {percentile(shed, 0.50) * 1000:.0f} ms, "
            f"p95 {percentile(shed, 0.95) * 1000:.0f} ms"
        )
    print("by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(counts.items())))
    print(f"errors (not 200/429/503): {sum(errors.values())} {errors or ''}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def spawned(data_dir: Path, serve_port: int, llm_port: int) -> Iterator[str]:
    """`regulus local-llm` and `regulus serve` on `data_dir`, for the duration of the test."""
    env = {**os.environ, "REGULUS_DATA_DIR": str(data_dir)}
    env.update(
        REGULUS_LLM_BASE_URL=f"http://127.0.0.1:{llm_port}/v1",
        REGULUS_LLM_MODEL=env.get("REGULUS_LLM_MODEL", "smollm2-135m"),
    )
    regulus = [sys.executable, "-m", "core.cli"]
    processes = [
        subprocess.Popen(
            [*regulus, "local-llm", "--port", str(llm_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [*regulus, "serve", "--port", str(serve_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        for url in (
            f"http://127.0.0.1:{llm_port}/v1/models",
            f"http://127.0.0.1:{serve_port}/readyz",
        ):
            deadline = time.monotonic() + 300
            while True:
                try:
                    if httpx.get(url, timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                    raise RuntimeError(f"{url} did not come up")
                time.sleep(1)
        yield f"http://127.0.0.1:{serve_port}"
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--spawn",
        type=Path,
        metavar="DATA_DIR",
        help="start the model server and the API on this (ingested) data folder",
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout, seconds")
    parser.add_argument("--think", type=float, default=0.0, help="pause between questions, s")
    args = parser.parse_args()

    def go(url: str) -> None:
        results, elapsed = asyncio.run(
            run(url, args.users, args.duration, args.max_requests, args.timeout, args.think)
        )
        report(results, elapsed, args.users)

    if args.spawn:
        with spawned(args.spawn, serve_port=free_port(), llm_port=free_port()) as url:
            go(url)
    else:
        go(args.url)


if __name__ == "__main__":
    main()
