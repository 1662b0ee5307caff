"""The later retrieval stages (cross-encoder reranking, reference expansion) on BM25 candidates,
side by side on the same questions, without embedding the corpus.

Embedding the 13.7k ObliQA passages takes hours on a busy 2-core machine, and these stages do not
need it to be measured: the corpus is ingested through the real pipeline (parsing, chunking, BM25,
payloads with reference keys, the embedded Qdrant engine) with random dense vectors, which sparse
search never reads, and the real `Retriever` runs in sparse mode with each stage on or off.
Figures are the same as `regulus eval retrieval`'s; the first stage is BM25, not hybrid.

Run: .venv/bin/python benchmarks/retrieval_ablation.py --questions FILE [--questions FILE...]
         [--limit 150] [--rerank-limit 60] [--heldout-only] [--exclude-ids FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from api.services import Services
from core.models import Principal, SearchMode
from core.settings import Settings
from eval.datasets import PassageIndex, load_questions
from eval.retrieval import run_questions, score
from eval.splits import is_training_question
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder, TextRole
from retrieval.expansion import ReferenceExpander
from retrieval.reranker import DEFAULT_RERANKER_PATH, CrossEncoderReranker
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared/corpora/obliqa/documents"
PRINCIPAL = Principal(subject="evaluator", groups=["public"])


class MemoReranker(CrossEncoderReranker):
    """Scores each (question, candidates) once: the runs with and without expansion share them."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self._memo: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def score(self, query: str, passages: list[str]) -> list[float]:
        key = (query, tuple(passages))
        if key not in self._memo:
            self._memo[key] = super().score(query, passages)
        return self._memo[key]


class RandomVectors(Embedder):
    """The real tokenizer (chunk budgets), random unit vectors instead of embeddings."""

    def embed(self, texts: Sequence[str], role: TextRole = TextRole.DOCUMENT) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        vectors = rng.normal(size=(len(texts), self.dimension)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def build(corpus: Path, data_dir: Path) -> Settings:
    settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
    marker = data_dir / "built.json"
    if not marker.is_file():
        services = Services(settings, embedder=RandomVectors(settings.embed_model))
        try:
            started = time.perf_counter()
            job = services.ingestor().run(list(discover_files([corpus])), requested_by="bench")
            failed = [d.error for d in job.documents if d.error]
            if failed:
                raise RuntimeError(f"{len(failed)} documents failed: {failed[0]}")
            marker.write_text(json.dumps({"chunks": services.store.count()}))
            print(f"store built in {time.perf_counter() - started:.0f} s: {marker.read_text()}")
        finally:
            services.close()
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--questions", type=Path, action="append", required=True)
    parser.add_argument("--store", type=Path, default=Path("/tmp/regulus-ablation-store"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--limit", type=int, default=150, help="questions per set")
    parser.add_argument("--rerank-limit", type=int, default=60, help="of those, reranked")
    parser.add_argument("--rerank-candidates", type=int, default=20)
    parser.add_argument("--reranker", default=str(DEFAULT_RERANKER_PATH))
    parser.add_argument("--heldout-only", action="store_true")
    parser.add_argument("--exclude-ids", type=Path, action="append", default=[])
    parser.add_argument("--expand-from-top", type=int, default=3)
    parser.add_argument("--expand-max-added", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)

    settings = build(args.corpus, args.store)
    excluded = {line.strip() for f in args.exclude_ids for line in f.read_text().splitlines()}
    passages = PassageIndex(discover_files([args.corpus]))
    services = Services(settings, embedder=RandomVectors(settings.embed_model))
    reranker = MemoReranker(args.reranker) if args.rerank_limit else None
    expander = ReferenceExpander(
        services.store,
        from_top=args.expand_from_top,
        max_added=args.expand_max_added,
    )

    def retriever(rerank: bool, expand: bool) -> Retriever:
        return Retriever(
            services.store,
            services.embedder,
            BM25Encoder(settings.bm25_k1, settings.bm25_b, settings.bm25_average_length),
            mode=SearchMode.SPARSE,
            top_k=args.k,
            reranker=reranker if rerank else None,
            rerank_candidates=args.rerank_candidates,
            expander=expander if expand else None,
        )

    report: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        for path in args.questions:
            fmt, loaded = load_questions(path, None, passages)
            selected = [
                q
                for q in loaded
                if q.gold_ids
                and q.question_id not in excluded
                and not (args.heldout_only and is_training_question(q.question_id))
            ][: args.limit]
            runs = {"bm25": (False, False), "bm25+refs": (False, True)}
            if reranker:
                runs |= {"bm25+rerank": (True, False), "bm25+rerank+refs": (True, True)}
            figures: dict[str, object] = {}
            for name, (rerank, expand) in runs.items():
                stage = retriever(rerank, expand)
                results = run_questions(
                    lambda q, r=stage: r.run(q, PRINCIPAL),  # type: ignore[misc]
                    selected[: args.rerank_limit] if rerank else selected,
                )
                figures[name] = score(results, args.k).model_dump()
                if reranker and not rerank:  # also on the questions the reranked runs see
                    first = results[: args.rerank_limit]
                    figures[f"{name} (first {len(first)})"] = score(first, args.k).model_dump()
                print(f"{path.name} [{fmt.value}] {name}: {json.dumps(figures[name])}", flush=True)
            report[path.name] = figures
    finally:
        services.close()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
