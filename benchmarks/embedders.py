"""Embedders side by side: retrieval quality (all-gold@k, recall@k by question type) and the whole
pipeline's answer latency, for the default MiniLM and the installable stronger models.

Each embedder gets its own benchmark index of the corpus (`eval.index.prepare_index`, reused while
corpus, settings and weights are unchanged) and the product's retriever as configured (hybrid
dense + BM25 by default); scoring is `regulus eval retrieval`'s (`eval.retrieval`). Latency is the
query pipeline as the API streams it (`generation.pipeline`, extractive answers unless a model
server is configured), the embedders taking turns question by question in one process so that all
of them see the same machine. Models are installed first with `regulus embedder install NAME`.

    .venv/bin/python benchmarks/embedders.py [--embedders regulus-embed-minilm-l6,all-mpnet-base-v2,
        embeddinggemma-300m] [--corpus corpora/sample] [--questions eval/questions/analyst.jsonl]
        [--tag split:heldout] [--heldout-only] [--latency-passes 1] [--json OUT]

For ObliQA (`--corpus ../shared/corpora/obliqa/documents --questions ObliQA_dev.json
--heldout-only --tag ''`), questions have no type tags: figures are over all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from api.services import Services, build_index
from core.models import Principal, Role
from core.settings import Settings
from eval.datasets import EvalQuestion
from eval.index import prepare_index
from eval.retrieval import percentile, run_questions, score
from eval.run import load_eval_questions
from eval.splits import is_training_question
from generation.pipeline import FinalEvent
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EMBEDDERS = "regulus-embed-minilm-l6,all-mpnet-base-v2,embeddinggemma-300m"
TYPES = ("single", "multi-article", "multi-document")
SHORT = {
    "regulus-embed-minilm-l6": "minilm",
    "all-mpnet-base-v2": "mpnet",
    "embeddinggemma-300m": "gemma",
}


def short(name: str) -> str:
    return SHORT.get(name, name.split("-")[0])


class Run:
    """One embedder: its index, services and the questions resolved against its chunks."""

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.name = name
        settings = Settings(_env_file=None, data_dir=args.data_dir, embed_model=name)  # type: ignore[call-arg]
        self.embedder = Embedder.from_settings(settings)
        started = time.perf_counter()
        index_settings, job = prepare_index(
            args.corpus, settings, partial(build_index, embedder=self.embedder)
        )
        self.build_s = None if job is None else time.perf_counter() - started
        self.services = Services(index_settings, embedder=self.embedder)
        self.chunks = self.services.store.count()
        self.principal = Principal(
            subject="evaluator", groups=settings.default_access_groups, role=Role.EVALUATOR
        )
        _, loaded, _, warnings = load_eval_questions(
            args.questions, None, self.services.store, discover_files([args.corpus])
        )
        for warning in warnings:
            print(f"{short(name)}: warning: {warning}")
        self.questions = [
            q
            for q in loaded
            if (not args.tag or args.tag in q.tags)
            and not (args.heldout_only and is_training_question(q.question_id))
        ][: args.limit]
        self.services.serve_queries()
        self.pipeline = self.services.query_pipeline(audited=False)

    def retrieval(self, k: int) -> dict[str, Any]:
        """Scores over the answerable questions, all together and by type."""
        retriever = self.services.retriever()
        judged = [q for q in self.questions if q.gold_ids]
        results = run_questions(lambda q: retriever.run(q, self.principal, top_k=k), judged)
        by_id = {r.question_id: r for r in results}
        figures = {"all": score(results, k).model_dump()}
        for kind in TYPES:
            subset = [by_id[q.question_id] for q in judged if kind in q.tags]
            if subset:
                figures[kind] = score(subset, k).model_dump()
        return figures

    def answer(self, question: EvalQuestion) -> dict[str, Any]:
        started = time.perf_counter()
        record: dict[str, Any] = {}
        for event in self.pipeline.stream(question.question, self.principal):
            if isinstance(event, FinalEvent):
                answer = event.result.answer
                record = {"refused": answer.refused, "timings": dict(event.result.timings)}
        record["total_ms"] = (time.perf_counter() - started) * 1000
        return record

    def close(self) -> None:
        self.services.close()


def latency(runs: list[Run], passes: int) -> dict[str, dict[str, Any]]:
    """Whole-pipeline answers to every selected question (answerable or not), the embedders
    taking turns; the first pass is cold (nothing cached), the later ones warm."""
    for run in runs:
        run.answer(run.questions[0])  # models loaded, first-call costs paid
    records: dict[str, dict[str, list[dict[str, Any]]]] = {
        r.name: {"cold": [], "warm": []} for r in runs
    }
    for number in range(passes):
        phase = "cold" if number == 0 else "warm"
        if phase == "cold":
            for run in runs:
                run.embedder.cache.clear()  # the warm-up question's vectors
        for i, question in enumerate(runs[0].questions):
            order = runs if i % 2 == 0 else list(reversed(runs))
            for run in order:
                records[run.name][phase].append(run.answer(question))
            line = ", ".join(
                f"{short(r.name)} {records[r.name][phase][-1]['total_ms']:.0f} ms" for r in runs
            )
            print(
                f"pass {number + 1} question {i + 1}/{len(runs[0].questions)}: {line}", flush=True
            )
    figures: dict[str, dict[str, Any]] = {}
    for name, phases in records.items():
        figures[name] = {}
        for phase, rows in phases.items():
            if rows:
                totals = [r["total_ms"] for r in rows]
                figures[name][phase] = {
                    "answers": len(rows),
                    "refused": sum(r["refused"] for r in rows),
                    "p50_ms": statistics.median(totals),
                    "p95_ms": percentile(totals, 0.95),
                }
    return figures


def report(runs: list[Run], quality: dict[str, Any], speed: dict[str, Any], k: int) -> None:
    names = [r.name for r in runs]
    width = 12
    header = "".join(f"{short(n):>{width}}" for n in names)
    print(f"\nretrieval @ {k}, {runs[0].questions and len(runs[0].questions)} questions selected")
    print(f"{'':<32}{header}")
    for kind in ("all", *TYPES):
        if kind not in quality[names[0]]:
            continue
        count = quality[names[0]][kind]["n_questions"]
        for metric in ("all_gold_at_k", "recall_at_k"):
            label = f"{kind} ({count}) {metric.replace('_at_k', f'@{k}')}"
            cells = "".join(f"{quality[n][kind][metric]:>{width}.2f}" for n in names)
            print(f"{label:<32}{cells}")
    cells = "".join(f"{quality[n]['all']['latency_ms_p50']:>{width}.0f}" for n in names)
    print(f"{'retrieval p50 ms':<32}{cells}")
    for phase in ("cold", "warm"):
        if phase not in speed[names[0]]:
            continue
        answers = speed[names[0]][phase]["answers"]
        for metric in ("p50_ms", "p95_ms"):
            cells = "".join(f"{speed[n][phase][metric]:>{width}.0f}" for n in names)
            print(f"{f'pipeline {phase} ({answers}) {metric}':<32}{cells}")
        cells = "".join(f"{speed[n][phase]['refused']:>{width}d}" for n in names)
        print(f"{f'pipeline {phase} refused':<32}{cells}")
    cells = "".join(f"{r.chunks:>{width}d}" for r in runs)
    print(f"{'index chunks':<32}{cells}")
    cells = "".join(f"{r.embedder.dimension:>{width}d}" for r in runs)
    print(f"{'dimension':<32}{cells}")
    cells = "".join(
        f"{'reused' if r.build_s is None else f'{r.build_s:.0f} s':>{width}}" for r in runs
    )
    print(f"{'index build':<32}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedders", default=DEFAULT_EMBEDDERS, help="comma-separated")
    parser.add_argument("--corpus", type=Path, default=ROOT / "corpora" / "sample")
    parser.add_argument("--questions", type=Path, default=ROOT / "eval/questions/analyst.jsonl")
    parser.add_argument("--tag", default="split:heldout", help="only questions with this tag")
    parser.add_argument("--heldout-only", action="store_true", help="ObliQA dev's held-out half")
    parser.add_argument("--limit", type=int, default=None, help="only the first N questions")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--latency-passes", type=int, default=1, help="0: no pipeline latency")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/regulus-embedders"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    runs: list[Run] = []
    try:
        for name in args.embedders.split(","):
            print(f"{name}: index ...", flush=True)
            runs.append(Run(name, args))
        quality = {}
        for run in runs:
            started = time.perf_counter()
            quality[run.name] = run.retrieval(args.k)
            print(f"{short(run.name)}: retrieval in {time.perf_counter() - started:.0f} s")
        speed = latency(runs, args.latency_passes) if args.latency_passes else {}
    finally:
        for run in runs:
            run.close()
    if not speed:
        speed = {r.name: {} for r in runs}
    report(runs, quality, speed, args.k)
    if args.json:
        figures = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "retrieval": quality,
            "pipeline": speed,
            "chunks": {r.name: r.chunks for r in runs},
            "build_s": {r.name: r.build_s for r in runs},
        }
        args.json.write_text(json.dumps(figures, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
