"""End-to-end query latency on CPU, split by stage: retrieval, rerank, generation, verification,
plus time to the first streamed token. The sample corpus, the product's pipeline (streamed, as the
API serves it) and the real SmolLM2 server (llama.cpp) standing in for vLLM.

Run: .venv/bin/python benchmarks/query_latency.py [--questions 20] [--max-tokens 128]
     [--llm-url URL --llm-model NAME] [--data-dir DIR]
Without --llm-url it starts the packaged SmolLM2 server on a free port. A --data-dir without the
sample corpus gets it ingested first (GDPR and the ePrivacy Directive: minutes on 2 cores).
Stage figures depend on the model's speed: SmolLM2-135M on CPU says nothing about vLLM on a GPU
(see benchmarks/vllm_serving.sh); retrieval and verification figures carry over.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from api.services import Services
from core.settings import Settings
from generation.local_server import LOCAL_MODEL_ALIAS, server_command
from generation.pipeline import FinalEvent, TokenEvent

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = [
    ROOT / "corpora/sample/gdpr_consolidated.xhtml",
    ROOT / "corpora/sample/eprivacy_consolidated.html",
]
QUESTIONS = [
    "Within how many hours must a personal data breach be notified to the supervisory authority?",
    "When must the controller communicate a personal data breach to the data subject?",
    "What information must a breach notification to the supervisory authority contain?",
    "What are the conditions for valid consent?",
    "Can a data subject withdraw consent at any time?",
    "What is the right to erasure?",
    "When is a data protection impact assessment required?",
    "Who must designate a data protection officer?",
    "What are the tasks of the data protection officer?",
    "What must a controller do under data protection by design and by default?",
    "What records of processing activities must a controller keep?",
    "What are the principles relating to processing of personal data?",
    "When may personal data be transferred to a third country?",
    "What fines can supervisory authorities impose?",
    "Is consent required to store cookies on a user's terminal equipment?",
    "What must a provider of electronic communications services do about security risks?",
    "How long may traffic data be stored by a communications provider?",
    "When may location data other than traffic data be processed?",
    "May electronic mail be used for direct marketing without consent?",
    "What rights does a subscriber have regarding itemised billing?",
]
STAGES = ("retrieval", "rerank", "generation", "verification")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_model_server() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        server_command("127.0.0.1", port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        else:
            raise TimeoutError("the local model server did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def measure(settings: Settings, questions: list[str]) -> dict[str, list[float]]:
    services = Services(settings)
    try:
        if not {d.document_id for d in services.catalog.documents()} >= {"gdpr", "eprivacy"}:
            print("ingesting the sample corpus (GDPR, ePrivacy) ...", flush=True)
            services.ingestor().run(SAMPLE)
        services.serve_queries()
        pipeline = services.query_pipeline()
        principal = services.anonymous_principal()
        list(pipeline.stream(questions[0], principal))  # warm-up: model loads, caches fill
        figures: dict[str, list[float]] = {name: [] for name in (*STAGES, "first token", "total")}
        for number, question in enumerate(questions, start=1):
            start = time.perf_counter()
            first: float | None = None
            for event in pipeline.stream(question, principal):
                if isinstance(event, TokenEvent) and first is None:
                    first = (time.perf_counter() - start) * 1000
                elif isinstance(event, FinalEvent):
                    for stage in STAGES:
                        figures[stage].append(event.result.timings.get(stage, 0.0))
            figures["total"].append((time.perf_counter() - start) * 1000)
            figures["first token"].append(first if first is not None else figures["total"][-1])
            print(f"{number}/{len(questions)}: {figures['total'][-1]:.0f} ms", flush=True)
        return figures
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--llm-url", help="an OpenAI-compatible server; default: start SmolLM2")
    parser.add_argument("--llm-model", default=LOCAL_MODEL_ALIAS)
    parser.add_argument("--data-dir", type=Path, help="an ingested data folder; default: temporary")
    args = parser.parse_args()
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.questions)]

    with (
        tempfile.TemporaryDirectory() as scratch,
        local_model_server() if args.llm_url is None else _given(args.llm_url) as url,
    ):
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=args.data_dir or Path(scratch),
            llm_base_url=url,
            llm_model=args.llm_model,
            llm_max_tokens=args.max_tokens,
            llm_timeout_s=600,
        )
        figures = measure(settings, questions)

    print(
        f"\n{len(questions)} questions, top_k={settings.top_k}, max_tokens={args.max_tokens}, "
        f"model={args.llm_model}, structured={settings.llm_structured}, "
        f"reranker={settings.reranker or 'none'}, torch threads={settings.query_threads}"
    )
    print(f"{'stage':<14}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    for name, values in figures.items():
        print(
            f"{name:<14}{percentile(values, 50):>10.1f}{percentile(values, 95):>10.1f}"
            f"{statistics.fmean(values):>10.1f}"
        )


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    main()
