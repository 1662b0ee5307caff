"""End-to-end query latency on CPU, split by stage (analysis, retrieval, relevance, generation,
verification, total), through the product's pipeline as the API streams it.

Questions: 20 in the rulebook's own words and the analyst question set (`eval/questions/
analyst.jsonl`: scenarios, several parts, several regulations); answers with one part and with
several (each part runs its own search and coverage check) are reported apart. Every question is
asked once with nothing cached ("cold"), then `--passes - 1` more times ("warm": an analyst team
asking about the same articles again).

With `--compare-with TREE` (a checkout of other code, e.g. `git worktree add ../before main`),
that code answers the same questions on its own copy of the data folder in a second process, the
two processes taking turns question by question, so both see the same machine: the before/after
table is measured side by side in one run.

    .venv/bin/python benchmarks/query_latency.py --data-dir DIR [--compare-with TREE]
        [--compare-data-dir DIR] [--passes 3] [--llm-url URL --llm-model NAME] [--filler 100000]

A data folder without the sample corpus gets it ingested first (minutes on 2 cores). `--filler N`
adds N chunks of ObliQA passages (real BM25 vectors, random dense ones, public, as
`retrieval_latency.py` builds them), so that every search scans an index of that size (answers
may then quote them: only the timings count). Without `--llm-url` answers are extractive
(the default deployment).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import psutil

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "corpora" / "sample"
ANALYST = ROOT / "eval" / "questions" / "analyst.jsonl"
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
STAGES = ("analysis", "retrieval", "relevance", "generation", "verification")


def questions() -> list[str]:
    analyst = [json.loads(line)["question"] for line in ANALYST.read_text().splitlines() if line]
    return QUESTIONS + analyst


def percentile(values: list[float], q: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- the worker: one process answering questions read from stdin ---------------------------------


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def worker(data_dir: Path, llm_url: str | None, llm_model: str | None) -> None:
    """Answers each question line from stdin; writes one JSON line of timings per answer."""
    from api.services import Services
    from core.settings import Settings
    from generation.pipeline import FinalEvent, TokenEvent

    options: dict[str, Any] = {"data_dir": data_dir}
    if llm_url:
        options |= {"llm_base_url": llm_url, "llm_model": llm_model, "llm_timeout_s": 600}
    settings = Settings(_env_file=None, **options)
    services = Services(settings)
    services.serve_queries()
    pipeline = services.query_pipeline(audited=False)
    principal = services.anonymous_principal()
    list(pipeline.stream("What is personal data?", principal))  # models load
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        question = line.rstrip("\n")
        start = time.perf_counter()
        first: float | None = None
        record: dict[str, Any] = {}
        for event in pipeline.stream(question, principal):
            if isinstance(event, TokenEvent) and first is None:
                first = (time.perf_counter() - start) * 1000
            elif isinstance(event, FinalEvent):
                record = dict(event.result.timings)
                record["parts"] = len(event.result.answer.parts)
        record["total"] = (time.perf_counter() - start) * 1000
        record["first token"] = first if first is not None else record["total"]
        record["rss_mb"] = rss_mb()
        cache = getattr(services.embedder, "cache", None)
        if cache is not None:
            record["cached_vectors"] = len(cache)
            record["cache_mb"] = cache.nbytes / 2**20
        print(json.dumps(record), flush=True)
    services.close()


class Worker:
    """A worker process running the code of `tree` (None: this checkout)."""

    def __init__(self, tree: Path | None, data_dir: Path, args: argparse.Namespace) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        if tree is not None:
            env["PYTHONPATH"] = str(tree)
        command = [sys.executable, __file__, "--worker", "--data-dir", str(data_dir)]
        if args.llm_url:
            command += ["--llm-url", args.llm_url, "--llm-model", args.llm_model]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self._read()  # ready

    def ask(self, question: str) -> dict[str, float]:
        assert self.process.stdin is not None
        self.process.stdin.write(question.replace("\n", " ") + "\n")
        self.process.stdin.flush()
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError("the worker died (its error is above)")
        return dict(json.loads(line))

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=60)


# --- setting up the data folder ------------------------------------------------------------------


def ensure_sample(data_dir: Path, filler: int) -> None:
    from api.services import Services
    from core.settings import Settings

    settings = Settings(_env_file=None, data_dir=data_dir)
    services = Services(settings)
    try:
        if len(services.catalog.documents()) < 4:
            print("ingesting the sample corpus ...", flush=True)
            services.ingestor().run(sorted(p for p in SAMPLE.iterdir() if p.suffix != ".jsonl"))
        if filler and services.store.count() < filler:
            add_filler(services, filler)
    finally:
        services.close()


def add_filler(services: Any, count: int) -> None:
    """`count` ObliQA passages as `retrieval_latency.py` builds them (public, real BM25 vectors,
    random dense ones), in the sample corpus's store."""
    from retrieval_latency import build, passages

    build(services.store, count, passages(), services.embedder.dimension)


# --- the report ----------------------------------------------------------------------------------


def summary(records: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    return {
        stage: (percentile(values, 50), percentile(values, 95))
        for stage in (*STAGES, "first token", "total")
        if (values := [r.get(stage, 0.0) for r in records])
    }


def report(runs: dict[str, dict[str, list[dict[str, float]]]]) -> None:
    names = list(runs)
    for group in ("one part", "several parts"):
        for phase in ("cold", "warm"):
            tables = {
                name: [r for r in runs[name][phase] if (r["parts"] > 1) == (group != "one part")]
                for name in names
            }
            if not all(tables.values()):
                continue
            counts = " / ".join(f"{name} {len(rows)}" for name, rows in tables.items())
            print(f"\n{group}, {phase} ({counts} answers)")
            header = "".join(f"{name + ' p50':>14}{name + ' p95':>14}" for name in names)
            print(f"{'stage':<14}{header}")
            stats = {name: summary(rows) for name, rows in tables.items()}
            for stage in stats[names[0]]:
                cells = "".join(
                    f"{stats[name][stage][0]:>14.1f}{stats[name][stage][1]:>14.1f}"
                    for name in names
                )
                print(f"{stage:<14}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="an ingested data folder; default: temporary")
    parser.add_argument("--compare-with", type=Path, help="a checkout of the code to compare with")
    parser.add_argument(
        "--compare-data-dir",
        type=Path,
        help="that code's own ingested data folder (default: a copy of --data-dir); for code "
        "whose SQL schema is older, which cannot open a newer one's",
    )
    parser.add_argument("--passes", type=int, default=3, help="1 cold pass, then warm ones")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument("--filler", type=int, default=0, help="grow the index to N chunks")
    parser.add_argument("--llm-url", help="an OpenAI-compatible server; default: extractive")
    parser.add_argument("--llm-model", default="smollm2-135m")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data_dir, args.llm_url, args.llm_model)
        return

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch) / "data"
        ensure_sample(data_dir, args.filler)
        trees: dict[str, Path | None] = {"after": None}
        before_data = Path(scratch) / "before-data"
        if args.compare_with:
            source = args.compare_data_dir or data_dir
            shutil.copytree(source, before_data, ignore=shutil.ignore_patterns("*.lock"))
            trees = {"before": args.compare_with.resolve(), "after": None}
        folders = {"before": before_data, "after": data_dir}
        workers = {name: Worker(tree, folders[name], args) for name, tree in trees.items()}
        asked = questions()[: args.limit]
        runs: dict[str, dict[str, list[dict[str, float]]]] = {
            name: {"cold": [], "warm": []} for name in workers
        }
        try:
            for number in range(args.passes):
                phase = "cold" if number == 0 else "warm"
                for i, question in enumerate(asked, start=1):
                    # Each takes the first turn on every other question.
                    order = list(workers) if i % 2 else list(reversed(workers))
                    for name in order:
                        runs[name][phase].append(workers[name].ask(question))
                    line = ", ".join(f"{n} {runs[n][phase][-1]['total']:.0f} ms" for n in workers)
                    print(f"pass {number + 1} question {i}/{len(asked)}: {line}", flush=True)
        finally:
            for each in workers.values():
                each.close()
    print(
        f"\n{len(asked)} questions x {args.passes} passes, "
        f"{'LLM ' + args.llm_model if args.llm_url else 'extractive'}, "
        f"index: sample corpus{f' + filler to {args.filler} chunks' if args.filler else ''}"
    )
    report(runs)
    for name, phases in runs.items():
        last = phases["warm" if phases["warm"] else "cold"][-1]
        cache = (
            f", {last['cached_vectors']:.0f} cached vectors ({last['cache_mb']:.1f} MB)"
            if "cached_vectors" in last
            else ""
        )
        print(f"{name}: process memory at the end {last['rss_mb']:.0f} MB{cache}")


if __name__ == "__main__":
    main()
