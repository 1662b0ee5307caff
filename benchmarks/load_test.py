"""Load test: N concurrent analysts asking questions for a bounded time against a running API.

Each analyst signs in with a key of their own, asks, waits for the answer, and asks again (no
think time by default). A 429 or 503 is load shedding, not an error: the analyst waits for
Retry-After (capped by what time is left) and goes on. Errors are everything else: other non-2xx
statuses, timeouts and connection failures.

    # against a running server: KEYS_FILE holds analyst keys, one per line (used in turn)
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --keys KEYS_FILE --users 20
    # or start `regulus local-llm` and `regulus serve` on DATA_DIR first (stopped at the end),
    # with one new analyst key per user (groups: public);
    # --extractive: no model server (the default deployment's extractive answers)
    python benchmarks/load_test.py --spawn DATA_DIR [--extractive] --users 20 --duration 60

The questions: 8 in the rulebook's words, then the analyst set (eval/questions/analyst.jsonl);
the analysts start evenly spread over them and go on in order, so that they rarely ask the same
question at once.

Prints throughput, latency percentiles of answered questions, and counts by status.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
from urllib.parse import urlsplit

import httpx

ANALYST_QUESTIONS = Path(__file__).resolve().parents[1] / "eval" / "questions" / "analyst.jsonl"
QUESTIONS = [
    "Within how many hours must a personal data breach be notified to the supervisory authority?",
    "When may personal data be transferred to a third country?",
    "What must a controller do before processing that is likely to result in a high risk?",
    "What information must be given to the data subject when data are collected?",
    "When is consent to the storing of information in terminal equipment required?",
    "What are the conditions for a child's consent in relation to information society services?",
    "When must a data protection officer be designated?",
    "What is the right to erasure?",
] + [json.loads(line)["question"] for line in ANALYST_QUESTIONS.read_text().splitlines() if line]


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
    questions: list[str],
    start: int,
    deadline: float,
    results: Results,
    budget: list[int],
    think_s: float,
) -> None:
    asked = start
    while time.monotonic() < deadline and budget[0] > 0:
        budget[0] -= 1
        question = questions[asked % len(questions)]
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


def client_for(url: str, number: int, key: str, timeout_s: float) -> httpx.AsyncClient:
    """Each analyst signs in with their key, from a loopback address of their own (as analysts
    at their own machines: per-address limits never lump them together)."""
    local = (
        f"127.0.1.{number + 1}" if urlsplit(url).hostname in ("127.0.0.1", "localhost") else None
    )
    transport = httpx.AsyncHTTPTransport(local_address=local) if local else None
    return httpx.AsyncClient(
        base_url=url,
        timeout=timeout_s,
        transport=transport,
        headers={"Authorization": f"Bearer {key}"},
    )


def analyst_keys(data_dir: Path, count: int) -> list[str]:
    """`count` new analyst keys (groups: public) in the data folder's key store."""
    from api.cli.admin import sql_stores
    from core.models import Role
    from core.settings import Settings

    with sql_stores(Settings(data_dir=data_dir)) as (keys, _):
        return [keys.create(Role.ANALYST, ["public"], f"load-test-{n}")[1] for n in range(count)]


async def run(
    url: str,
    keys: list[str],
    questions: list[str],
    users: int,
    duration_s: float,
    max_requests: int,
    timeout_s: float,
    think_s: float,
) -> tuple[Results, float]:
    results = Results()
    budget = [max_requests]
    clients = [client_for(url, n, keys[n % len(keys)], timeout_s) for n in range(users)]
    try:
        started = time.monotonic()
        deadline = started + duration_s
        await asyncio.gather(
            *(
                analyst(
                    client,
                    questions,
                    n * len(questions) // users,
                    deadline,
                    results,
                    budget,
                    think_s,
                )
                for n, client in enumerate(clients)
            )
        )
        elapsed = time.monotonic() - started
    finally:
        for client in clients:
            await client.aclose()
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


def _wait_for(url: str, processes: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"{url} did not come up")
        time.sleep(1)


@contextmanager
def spawned(data_dir: Path, with_model: bool) -> Iterator[str]:
    """`regulus serve` on `data_dir` (and `regulus local-llm` behind it) while the test runs."""
    env = {**os.environ, "REGULUS_DATA_DIR": str(data_dir)}
    regulus = [sys.executable, "-m", "api.cli.main"]
    processes: list[subprocess.Popen[bytes]] = []

    def start(*command: str) -> None:
        processes.append(
            subprocess.Popen(
                [*regulus, *command], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )

    try:
        if with_model:
            llm_port = free_port()
            env["REGULUS_LLM_BASE_URL"] = f"http://127.0.0.1:{llm_port}/v1"
            env.setdefault("REGULUS_LLM_MODEL", "smollm2-135m")
            start("local-llm", "--port", str(llm_port))
            _wait_for(f"http://127.0.0.1:{llm_port}/v1/models", processes)
        serve_port = free_port()
        start("serve", "--port", str(serve_port))
        _wait_for(f"http://127.0.0.1:{serve_port}/readyz", processes)
        yield f"http://127.0.0.1:{serve_port}"
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a model server busy generating
                process.kill()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--keys", type=Path, help="with --url: a file of analyst keys, one a line")
    parser.add_argument(
        "--spawn",
        type=Path,
        metavar="DATA_DIR",
        help="start the model server and the API on this (ingested) data folder",
    )
    parser.add_argument(
        "--extractive", action="store_true", help="with --spawn: no model server behind the API"
    )
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--questions", type=int, help="ask only the first N questions")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds")
    parser.add_argument("--max-requests", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout, seconds")
    parser.add_argument("--think", type=float, default=0.0, help="pause between questions, s")
    args = parser.parse_args()

    def go(url: str, keys: list[str]) -> None:
        results, elapsed = asyncio.run(
            run(
                url,
                keys,
                QUESTIONS[: args.questions],
                args.users,
                args.duration,
                args.max_requests,
                args.timeout,
                args.think,
            )
        )
        report(results, elapsed, args.users)

    if args.spawn:
        keys = analyst_keys(args.spawn, args.users)
        with spawned(args.spawn, with_model=not args.extractive) as url:
            go(url, keys)
    elif args.keys:
        go(args.url, args.keys.read_text().split())
    else:
        parser.error("--url needs --keys (analyst keys, one per line); or use --spawn")


if __name__ == "__main__":
    main()
