"""Ingestion throughput, measured side by side in one run on the same files:

1. Regulus end to end (parse, chunk, dense + sparse vectors, embedded Qdrant, SQL catalog, and
   the passage sentences' vectors unless `--sentence-vectors off`), once per embedding backend
   (`--backends torch onnx-int8`) and sentence-vector setting (`--sentence-vectors on off`);
2. the raw embedder alone on exactly the texts Regulus embedded (the ceiling: the chunks, and the
   sentences when they were embedded too), per run;
3. a plain llama-index IngestionPipeline (SentenceSplitter, HuggingFaceEmbedding, QdrantVectorStore)
   over the same parsed sections.

Run: .venv/bin/python benchmarks/ingest_throughput.py [--obliqa-docs N] [--sample-files NAME...]
[--backends torch onnx-int8] [--sentence-vectors on off] [--skip-baseline] (needs
`pip install -e '.[bench]'` for the baseline).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

import torch

from api.services import Services
from core.models import EmbedBackend
from core.sentences import passage_sentences
from core.settings import Settings
from ingest.parsers import parse_document
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder, TextRole, resolve_model_location

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def regulus_run(
    files: list[Path], data_dir: Path, backend: EmbedBackend, models: Path, sentences: bool
) -> tuple[float, int, list[str], list[str], Services]:
    """Elapsed seconds, chunks, the chunk texts and the sentences embedded, and the services."""
    settings = Settings(
        _env_file=None, data_dir=data_dir, embed_backend=backend, sentence_vectors=sentences
    )  # type: ignore[call-arg]
    # One export folder for every run: the one-time ONNX export is not part of the figures.
    embedder = Embedder.from_settings(settings.model_copy(update={"data_dir": models}))
    services = Services(settings, embedder=embedder)
    started = time.perf_counter()
    job = services.ingestor().run(files, requested_by="benchmark")
    elapsed = time.perf_counter() - started
    failed = [d.error for d in job.documents if d.error]
    if failed:
        raise SystemExit(f"ingestion failed: {failed[:3]}")
    chunks = services.store.chunks()
    texts = [chunk.embedding_text() for chunk in chunks]
    per_document = {
        (chunk.document_id, sentence): None
        for chunk in chunks
        for sentence in passage_sentences(chunk.text)
    }
    embedded = [sentence for _, sentence in per_document] if sentences else []
    return elapsed, sum(d.chunks for d in job.documents), texts, embedded, services


def llama_index_run(
    files: list[Path], data_dir: Path, model: str, chunk_tokens: int
) -> tuple[float, int]:
    from llama_index.core import Document
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(data_dir))
    pipeline = IngestionPipeline(
        transformations=[
            SentenceSplitter(chunk_size=chunk_tokens, chunk_overlap=40),
            # fp32 like Regulus on a CPU: the shipped weights are fp16, slow on CPUs.
            HuggingFaceEmbedding(
                model_name=resolve_model_location(model), model_kwargs={"dtype": torch.float32}
            ),
        ],
        vector_store=QdrantVectorStore(client=client, collection_name="baseline"),
    )
    started = time.perf_counter()
    documents = [
        Document(text=section.text, metadata={"section": " > ".join(section.path)})
        for path in files
        for section in parse_document(path).sections
    ]
    nodes = pipeline.run(documents=documents)
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed, len(nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--obliqa", type=Path, default=ROOT.parent / "shared/corpora/obliqa/documents"
    )
    parser.add_argument("--obliqa-docs", type=int, default=40, help="How many ObliQA documents.")
    parser.add_argument("--sample", type=Path, default=ROOT / "corpora/sample")
    parser.add_argument(
        "--sample-files", nargs="+", help="Only these files of the sample corpus (default: all)."
    )
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnx-int8"], choices=list(EmbedBackend)
    )
    parser.add_argument("--sentence-vectors", nargs="+", default=["on"], choices=["on", "off"])
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    obliqa = sorted(discover_files([args.obliqa]), key=lambda p: int(p.stem))[: args.obliqa_docs]
    sample = [
        path
        for path in discover_files([args.sample])
        if not args.sample_files or path.name in args.sample_files
    ]
    files = obliqa + sample
    print(
        f"{len(files)} files: {len(obliqa)} ObliQA documents + "
        + ", ".join(path.name for path in sample)
        + f"; {os.environ.get('OMP_NUM_THREADS', 'default')} thread(s)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        elapsed_by_backend = {}
        for backend_name in args.backends:
            for sentence_setting in args.sentence_vectors:
                name = f"{backend_name}, sentence vectors {sentence_setting}"
                elapsed, chunks, texts, sentences, services = regulus_run(
                    files,
                    Path(tmp) / f"regulus-{backend_name}-{sentence_setting}",
                    EmbedBackend(backend_name),
                    Path(tmp),
                    sentence_setting == "on",
                )
                elapsed_by_backend[name] = elapsed
                print(
                    f"regulus[{name}] {elapsed:7.1f} s  {len(files) / elapsed:6.3f} docs/s  "
                    f"{chunks / elapsed:7.1f} chunks/s  ({chunks} chunks, {len(sentences)} "
                    f"sentences)  peak RSS {peak_rss_mb():.0f} MB",
                    flush=True,
                )
                started = time.perf_counter()
                services.embedder.embed(texts, TextRole.DOCUMENT)
                services.embedder.embed(sentences, TextRole.DOCUMENT)
                raw = time.perf_counter() - started
                services.close()
                print(
                    f"embedder[{name}] {raw:6.1f} s on the same texts; "
                    f"end-to-end / raw: {raw / elapsed:.2f}",
                    flush=True,
                )
        if not args.skip_baseline:
            settings = Settings(_env_file=None)  # type: ignore[call-arg]
            base_elapsed, nodes = llama_index_run(
                files, Path(tmp) / "baseline", settings.embed_model, 254
            )
            print(
                f"llama-index {base_elapsed:7.1f} s  {len(files) / base_elapsed:6.3f} docs/s  "
                f"{nodes / base_elapsed:7.1f} nodes/s  ({nodes} nodes)"
            )
            for name, elapsed in elapsed_by_backend.items():
                print(f"speed-up over llama-index [{name}]: {base_elapsed / elapsed:.2f}x")


if __name__ == "__main__":
    main()
