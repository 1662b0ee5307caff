"""Embedding backends side by side on the same texts: speed, agreement with PyTorch, and dense
retrieval quality on held-out ObliQA dev questions.

The corpus is every passage of a few ObliQA documents (default: the ones held-out questions cite
most, ~2,700 passages) and the questions are held-out ObliQA dev questions whose gold passages all
lie in those documents. Retrieval is dense only (exact dot product), so the figures show what the
backend changes and nothing else.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/embed_backends.py [--questions 150]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from core.models import EmbedBackend
from core.settings import Settings
from eval.splits import is_training_question
from retrieval.embedder import Embedder, TextRole

ROOT = Path(__file__).resolve().parents[1]
OBLIQA = ROOT.parent / "shared/corpora/obliqa"


def load(
    documents: list[int], limit: int
) -> tuple[list[str], list[str], list[str], list[set[str]]]:
    """Passage ids and texts of `documents`; up to `limit` held-out questions and their gold."""
    ids, texts, by_ref = [], [], {}
    for number in documents:
        for item in json.loads((OBLIQA / "documents" / f"{number}.json").read_text()):
            if item["Passage"].strip():
                ids.append(item["ID"])
                texts.append(item["Passage"])
                by_ref[(item["DocumentID"], str(item["PassageID"]))] = item["ID"]
    questions, gold = [], []
    for question in json.loads((OBLIQA / "ObliQA_dev.json").read_text()):
        if is_training_question(question["QuestionID"]):
            continue
        refs = [(p["DocumentID"], str(p["PassageID"])) for p in question["Passages"]]
        if refs and all(ref in by_ref for ref in refs):
            questions.append(question["Question"])
            gold.append({by_ref[ref] for ref in refs})
        if len(questions) == limit:
            break
    return ids, texts, questions, gold


def scores(
    passages: np.ndarray, queries: np.ndarray, ids: list[str], gold: list[set[str]], k: int
) -> tuple[float, float]:
    """Recall@k (share of gold passages found) and MRR@k, averaged over questions."""
    top = np.argsort(-(queries @ passages.T), axis=1)[:, :k]
    recall, mrr = [], []
    for row, wanted in zip(top, gold, strict=True):
        found = [ids[i] for i in row]
        recall.append(len(wanted & set(found)) / len(wanted))
        mrr.append(next((1 / (rank + 1) for rank, i in enumerate(found) if i in wanted), 0.0))
    return float(np.mean(recall)), float(np.mean(mrr))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[1, 3, 10, 19, 34])
    parser.add_argument("--questions", type=int, default=150)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument(
        "--backends", nargs="+", default=["torch", "onnx-int8"], choices=list(EmbedBackend)
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    ids, texts, questions, gold = load(args.documents, args.questions)
    print(
        f"{len(texts)} passages of ObliQA documents {args.documents}; "
        f"{len(questions)} held-out ObliQA dev questions; dense retrieval, k={args.k}; "
        f"{torch.get_num_threads()} thread(s)"
    )
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    vectors: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as cache:
        for name in args.backends:
            embedder = Embedder(
                settings.embed_model,
                batch_size=settings.embed_batch_size,
                backend=EmbedBackend(name),
                cache_dir=Path(cache),
            )
            started = time.perf_counter()
            vectors[name] = embedder.embed(texts, TextRole.DOCUMENT)
            elapsed = time.perf_counter() - started
            recall, mrr = scores(
                vectors[name], embedder.embed(questions, TextRole.QUERY), ids, gold, args.k
            )
            line = f"{name:10} {len(texts) / elapsed:7.1f} passages/s  "
            line += f"recall@{args.k} {recall:.3f}  MRR@{args.k} {mrr:.3f}"
            if name != args.backends[0]:
                reference = vectors[args.backends[0]]
                agreement = (vectors[name] * reference).sum(axis=1)
                line += (
                    f"  cosine to {args.backends[0]}: mean {agreement.mean():.4f} "
                    f"p1 {np.percentile(agreement, 1):.4f} min {agreement.min():.4f}"
                )
            print(line, flush=True)


if __name__ == "__main__":
    main()
