"""Query latency of the product's retriever as the embedded store grows (10k and 100k chunks).

Chunks are real ObliQA passages, repeated with new ids to reach each size; their sparse vectors
are real BM25 vectors. Dense vectors are random unit vectors: search is exact (no HNSW), so its
cost does not depend on their values, and embedding 100k passages would take hours on 2 cores.
Queries are real ObliQA questions, embedded and encoded exactly as in production. With a reranker
(REGULUS_RERANKER or the shipped one), the rerank stage is timed too.

Run: REGULUS_RERANKER=builtin .venv/bin/python benchmarks/retrieval_latency.py
         [--sizes 10000 100000]
         [--queries 100] [--rerank-candidates 20 30]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from core.models import Chunk, Principal, SearchFilters, SearchMode
from core.settings import Settings
from retrieval.embedder import Embedder
from retrieval.expansion import ReferenceExpander
from retrieval.reranker import load_reranker
from retrieval.retriever import Retriever
from retrieval.sparse import BM25Encoder
from retrieval.store.edge import EdgeVectorStore

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared/corpora/obliqa"
BATCH = 2000


def passages() -> list[tuple[str, str]]:
    found = []
    for path in sorted((CORPUS / "documents").glob("*.json")):
        for item in json.loads(path.read_text()):
            if len(item["Passage"].strip()) > 120:
                found.append((str(item["PassageID"]), item["Passage"].strip()))
    return found


def build(store: EdgeVectorStore, size: int, texts: list[tuple[str, str]], dim: int) -> float:
    rng = np.random.default_rng(7)
    encoder = BM25Encoder()
    store.ensure_collection(dim)
    started = time.perf_counter()
    for start in range(0, size, BATCH):
        chunks, sparse = [], []
        for n in range(start, min(size, start + BATCH)):
            ref, text = texts[n % len(texts)]
            chunks.append(
                Chunk(
                    chunk_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{n}")),
                    document_id=f"doc-{n % 40}",
                    document_title="ObliQA",
                    section=ref,
                    section_ref=ref,
                    text=text,
                    source="bench",
                    content_hash="bench",
                    jurisdiction="ADGM" if n % 4 else "DIFC",
                    access_groups=["public"],
                )
            )
            sparse.append(encoder.encode_document(text))
        dense = rng.normal(size=(len(chunks), dim)).astype(np.float32)
        dense /= np.linalg.norm(dense, axis=1, keepdims=True)
        store.upsert(chunks, dense, sparse)
    store.optimize()
    return time.perf_counter() - started


def timed(fn, questions: list[str]) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    latencies = []
    for question in questions:
        started = time.perf_counter()
        fn(question)
        latencies.append((time.perf_counter() - started) * 1000)
    ordered = sorted(latencies)
    return statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--rerank-candidates", type=int, nargs="+", default=[20, 30])
    args = parser.parse_args()

    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    torch.set_num_threads(settings.query_threads)  # as `regulus serve` runs queries
    embedder = Embedder(settings.embed_model)
    texts = passages()
    questions = [q["Question"] for q in json.loads((CORPUS / "ObliQA_dev.json").read_text())]
    questions = questions[: args.queries]
    reranker = load_reranker(settings)
    public = Principal(subject="bench", groups=["public"])
    adgm = SearchFilters(jurisdictions=["ADGM"])
    print(f"{len(texts)} distinct passages, {len(questions)} queries")
    first_size: dict[str, float] = {}
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = EdgeVectorStore(Path(tmp) / "vectors")
            build_s = build(store, size, texts, embedder.dimension)
            rows = []
            for mode in (SearchMode.DENSE, SearchMode.SPARSE, SearchMode.HYBRID):
                retriever = Retriever(store, embedder, BM25Encoder(), mode=mode, top_k=10)
                rows.append(
                    (f"{mode.value}", timed(lambda q, r=retriever: r.run(q, public), questions))
                )
            hybrid = Retriever(store, embedder, BM25Encoder(), mode=SearchMode.HYBRID, top_k=10)
            rows.append(
                ("hybrid + filter", timed(lambda q, h=hybrid: h.run(q, public, adgm), questions))
            )
            expanding = Retriever(
                store,
                embedder,
                BM25Encoder(),
                mode=SearchMode.HYBRID,
                top_k=10,
                expander=ReferenceExpander(store),
            )
            rows.append(
                ("hybrid + references", timed(lambda q, e=expanding: e.run(q, public), questions))
            )
            for candidates in args.rerank_candidates if reranker is not None else []:
                reranking = Retriever(
                    store,
                    embedder,
                    BM25Encoder(),
                    mode=SearchMode.HYBRID,
                    top_k=10,
                    reranker=reranker,
                    rerank_candidates=candidates,
                )
                rows.append(
                    (
                        f"hybrid + rerank {candidates}",
                        timed(lambda q, r=reranking: r.run(q, public), questions),
                    )
                )
            store.close()
        print(f"\n{size:,} chunks (built and optimized in {build_s:.0f} s)")
        for name, (p50, p95) in rows:
            growth = ""
            if name in first_size:
                growth = f"   p50 x{p50 / first_size[name]:.2f} vs {args.sizes[0]:,}"
            print(f"  {name:22s} p50 {p50:7.1f} ms   p95 {p95:7.1f} ms{growth}")
            first_size.setdefault(name, p50)
    print(f"\nload average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
