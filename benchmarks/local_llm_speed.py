"""Speed of the local GGUF models (`regulus local-llm`) behind the product's pipeline, side by side.

Both models are installed (verified; once), served by llama.cpp at the same time and asked the same
sample-corpus questions in turn, question by question, through `QueryPipeline.stream` at the
default top_k, so that both see the same machine. Per answer:

- prompt tokens/s and output tokens/s: llama.cpp's own timings (`prompt eval time`, `eval time`
  in the server's log; with the prompt cache on, prompt tokens are those actually evaluated); when
  the log has none, estimated from the stream (passages to first token; first token to last);
- time to first token: from the question to the first streamed answer text (analysis, retrieval
  and the coverage check included, as an analyst waits for it);
- answer time: the whole streamed answer, verification included.

    .venv/bin/python benchmarks/local_llm_speed.py [--models qwen-0.5b,qwen-1.5b] [--questions 3]
        [--data-dir DIR] [--threads N]

The data folder (`--data-dir`, default a temporary one) gets GDPR and the ePrivacy Directive
ingested (the questions are about them; unchanged documents are skipped). Takes a while on 2
cores: a 1.5B answer is minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the server helpers of tests/helpers.py
SAMPLE = ROOT / "corpora" / "sample"
DOCUMENTS = [SAMPLE / "gdpr_consolidated.xhtml", SAMPLE / "eprivacy_consolidated.html"]
QUESTIONS = [
    "How long does a controller have to notify the supervisory authority of a personal data "
    "breach?",
    "What are the conditions for valid consent?",
    "Is consent required to store cookies on a user's terminal equipment?",
    "Who must designate a data protection officer?",
    "How long may traffic data be stored by a communications provider?",
]
# llama.cpp's per-request timings, as llama-cpp-python's server logs them.
PROMPT_EVAL = re.compile(r"prompt eval time\s*=\s*([\d.]+) ms /\s*(\d+) tokens")
EVAL = re.compile(r"(?<!prompt )eval time\s*=\s*([\d.]+) ms /\s*(\d+) runs")


@dataclass
class Server:
    name: str
    alias: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    offset: int = 0

    def new_log(self) -> str:
        text = self.log.read_text(errors="replace")
        new, self.offset = text[self.offset :], len(text)
        return new

    def timings(self) -> tuple[tuple[float, int], tuple[float, int]] | None:
        """(ms, tokens) of prompt evaluation and of generation for the last request, from the
        server's log (llama-cpp-python prints them after each completion, for that request)."""
        log = self.new_log()
        prompts, evals = PROMPT_EVAL.findall(log), EVAL.findall(log)
        if not (prompts and evals):
            return None
        return (float(prompts[-1][0]), int(prompts[-1][1])), (
            float(evals[-1][0]),
            int(evals[-1][1]),
        )


@dataclass
class Row:
    model: str
    question: int
    prompt_tokens: int
    prompt_tps: float
    output_tokens: int
    output_tps: float
    ttft_s: float
    answer_s: float
    cited: str
    from_log: bool
    extra: dict[str, Any] = field(default_factory=dict)


def start_server(name: str, threads: int | None, folder: Path) -> Server:
    from generation.local_models import get_model, install
    from generation.local_server import server_command
    from tests.helpers import free_port, wait_for_http

    model = get_model(name)
    install(model, log=print)
    port = free_port()
    log = folder / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            server_command("127.0.0.1", port, model=model, threads=threads),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    wait_for_http(f"{url}/models", process, timeout_s=300)
    server = Server(name, model.alias, url, process, log)
    server.timings()
    return server


def ask(pipeline: Any, principal: Any, server: Server, number: int, question: str) -> Row:
    from generation.pipeline import FinalEvent, PassagesEvent, TokenEvent

    start = time.perf_counter()
    passages_at = first = last = None
    result = None
    for event in pipeline.stream(question, principal):
        now = time.perf_counter()
        if isinstance(event, PassagesEvent):
            passages_at = now
        elif isinstance(event, TokenEvent):
            first = first or now
            last = now
        elif isinstance(event, FinalEvent):
            result = event.result
    end = time.perf_counter()
    assert result is not None and first is not None and last is not None
    answer = result.answer
    usage = answer.usage
    prompt_tokens = usage.prompt_tokens if usage else 0
    output_tokens = usage.completion_tokens if usage else 0
    timings = server.timings()
    if timings is not None:
        (prompt_ms, evaluated), (eval_ms, runs) = timings
        prompt_tps = evaluated / (prompt_ms / 1000) if prompt_ms else 0.0
        output_tps = runs / (eval_ms / 1000) if eval_ms else 0.0
        prompt_tokens = evaluated  # a streamed llama.cpp answer reports no prompt tokens
        from_log = True
    else:
        prefill = first - (passages_at or start)
        prompt_tps = prompt_tokens / prefill if prefill > 0 else 0.0
        output_tps = output_tokens / (last - first) if last > first else 0.0
        from_log = False
    cited = sum(1 for s in answer.sentences if s.citations)
    return Row(
        model=server.name,
        question=number,
        prompt_tokens=prompt_tokens,
        prompt_tps=prompt_tps,
        output_tokens=output_tokens,
        output_tps=output_tps,
        ttft_s=first - start,
        answer_s=end - start,
        cited=f"{cited}/{len(answer.sentences)}",
        from_log=from_log,
        extra={
            "text": answer.text,
            "refused": answer.refused,
            "evaluated": timings[0][1] if timings else None,
        },
    )


def table(rows: list[Row], models: list[str]) -> str:
    lines = [
        "| model | question | prompt tokens evaluated | prompt tok/s | output tokens | "
        "output tok/s | first token (s) | answer (s) | sentences cited |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row.model} | {row.question} | {row.prompt_tokens} | {row.prompt_tps:.1f} | "
            f"{row.output_tokens} | {row.output_tps:.1f} | {row.ttft_s:.1f} | {row.answer_s:.1f} "
            f"| {row.cited} |"
        )
    for model in models:
        mine = [row for row in rows if row.model == model]
        if not mine:
            continue

        def median(key: str, rows: list[Row] = mine) -> float:
            return statistics.median(getattr(row, key) for row in rows)

        lines.append(
            f"| **{model}** | median | {median('prompt_tokens'):.0f} | "
            f"{median('prompt_tps'):.1f} | {median('output_tokens'):.0f} | "
            f"{median('output_tps'):.1f} | {median('ttft_s'):.1f} | {median('answer_s'):.1f} | |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="qwen-0.5b,qwen-1.5b")
    parser.add_argument("--questions", type=int, default=3)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()

    from api.services import Services
    from core.settings import Settings
    from retrieval.embedder import Embedder
    from tests.helpers import stop

    models = args.models.split(",")
    with tempfile.TemporaryDirectory(prefix="local-llm-speed-") as scratch:
        folder = Path(scratch)
        data_dir = args.data_dir or folder / "data"
        embedder = Embedder(Settings(_env_file=None).embed_model)  # type: ignore[call-arg]
        base = Settings(_env_file=None, data_dir=data_dir, llm_timeout_s=1200)  # type: ignore[call-arg]
        # One store per process: one Services, a pipeline per model server.
        services = Services(base, embedder=embedder)
        print("ingesting GDPR and the ePrivacy Directive (skipped when unchanged) ...", flush=True)
        services.ingestor().run(DOCUMENTS)
        servers: list[Server] = []
        rows = []
        try:
            for name in models:
                servers.append(start_server(name, args.threads, folder))
            pipelines = []
            for server in servers:
                services.settings = base.model_copy(
                    update={"llm_base_url": server.url, "llm_model": server.alias}
                )
                pipelines.append(services.query_pipeline(audited=False))
            principal = services.anonymous_principal()
            for number, question in enumerate(QUESTIONS[: args.questions], start=1):
                for server, pipeline in zip(servers, pipelines, strict=True):
                    row = ask(pipeline, principal, server, number, question)
                    rows.append(row)
                    print(
                        f"{row.model} q{number}: {row.answer_s:.0f} s, first token "
                        f"{row.ttft_s:.0f} s, {row.output_tokens} tokens; {row.extra['text']}",
                        flush=True,
                    )
        finally:
            services.close()
            for server in servers:
                stop(server.process)
    print()
    for number, question in enumerate(QUESTIONS[: args.questions], start=1):
        print(f"{number}. {question}")
    print()
    print(table(rows, models))
    if not all(row.from_log for row in rows):
        print("\n(some tokens/s estimated from the stream: the server logged no timings)")


if __name__ == "__main__":
    main()
