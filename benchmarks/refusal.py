"""Calibrate and measure the relevance gate that refuses questions the corpus does not address.

On the ObliQA (ADGM) corpus: each question's top passages come from BM25 over the corpus passages
(title, headings, text, as ingested), then the gate's signals are computed with the service's
embedder: the best cosine between the question and (a) the top passages, (b) their sentences.
- calibration: a sample of ObliQA dev questions the embedder was not trained on (answerable; the
  training half for the stock model, kept apart from retrieval figures; the held-out half for the
  project's fine-tuned one, whose training questions would look closer than unseen ones) and the
  odd lines of the unanswerable set tagged `corpus:obliqa`; the threshold maximises balanced
  accuracy;
- measurement: a sample of XRefRAG dev questions (answerable, never used to calibrate) and the even
  lines of the unanswerable set, at that threshold: false refusals and false answers.

    OMP_NUM_THREADS=1 python benchmarks/refusal.py --answerable 100 --calibration 80
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("UNSTRUCTURED_DISABLE_NOTICE", "1")

import numpy as np
import torch

from core.models import Chunk, RetrievedChunk
from core.settings import Settings
from eval.splits import is_training_question
from eval.training.common import (
    DEFAULT_CORPUS_DIR,
    Passage,
    indexed_corpus,
    obliqa_questions,
    xrefrag_questions,
)
from eval.training.train_embedder import TRAINING_IDS_FILE
from eval.training.train_support import auc
from generation.refusal import RelevanceGate, RelevanceSignal
from retrieval.embedder import Embedder, resolve_model_location

ROOT = Path(__file__).resolve().parents[1]
UNANSWERABLE = ROOT / "eval" / "questions" / "unanswerable.jsonl"


def as_retrieved(passage: Passage) -> RetrievedChunk:
    chunk = Chunk(
        document_id=str(passage.document_id),
        document_title=passage.document_title,
        chunk_id=passage.id,
        section=passage.section,
        text=passage.text,
        source="obliqa",
        content_hash="",
    )
    return RetrievedChunk(chunk=chunk, score=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--answerable", type=int, default=100, help="XRefRAG dev questions")
    parser.add_argument("--calibration", type=int, default=80, help="ObliQA dev questions")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--embed-model", default=Settings().embed_model, help="default: setting")
    parser.add_argument("--scores", type=Path, default=None, help="also write every score here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    corpus_dir = args.corpus_dir.resolve()
    corpus, bm25 = indexed_corpus(corpus_dir)
    rng = random.Random(args.seed)

    dev = obliqa_questions(corpus_dir / "obliqa" / "ObliQA_dev.json", corpus_dir)
    trained_on = Path(resolve_model_location(args.embed_model)) / TRAINING_IDS_FILE
    if trained_on.is_file():
        seen = set(trained_on.read_text().split())
        obliqa = [q.text for q in dev if q.id not in seen]
    else:
        obliqa = [q.text for q in dev if is_training_question(q.id)]
    xref = [
        q.text
        for name in ("DPEL", "SCHEMA")
        for q in xrefrag_questions(corpus_dir / "xrefrag" / f"{name}_dev.jsonl")
    ]
    unanswerable = [
        json.loads(line)["question"]
        for line in UNANSWERABLE.read_text(encoding="utf-8").splitlines()
        if "corpus:obliqa" in line
    ]
    sets = {
        "calibration": (rng.sample(obliqa, args.calibration), unanswerable[0::2]),
        "measurement": (rng.sample(xref, args.answerable), unanswerable[1::2]),
    }
    embedder = Embedder(args.embed_model)
    gates = {signal: RelevanceGate(embedder, 0.0, signal=signal) for signal in RelevanceSignal}
    scores: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    timings: dict[str, list[float]] = {signal: [] for signal in RelevanceSignal}
    for name, (answerable, off_topic) in sets.items():
        questions = answerable + off_topic
        labels = np.array([1] * len(answerable) + [0] * len(off_topic))
        scores[name] = {}
        for signal, gate in gates.items():
            values = []
            for question in questions:
                top = [as_retrieved(corpus[i]) for i in bm25.search(question, args.top_k)]
                started = time.perf_counter()
                values.append(gate.score(question, top))
                timings[signal].append((time.perf_counter() - started) * 1000)
            scores[name][signal] = (labels, np.array(values))
            print(f"{name} {signal}: AUC {auc(labels, np.array(values)):.3f}", flush=True)

    report: dict[str, object] = {
        "corpus": "ObliQA (ADGM), BM25 top passages",
        "embedder": args.embed_model,
        "calibration": {"answerable_obliqa_dev": args.calibration, "unanswerable": 13},
        "measurement": {"answerable_xrefrag_dev": args.answerable, "unanswerable": 12},
    }
    for signal in RelevanceSignal:
        labels, values = scores["calibration"][signal]
        threshold = round(best_cosine(labels, values), 3)
        test_labels, test_values = scores["measurement"][signal]
        refused = test_values < threshold
        answerable = test_labels == 1
        report[signal] = {
            "threshold": threshold,
            "auc_calibration": round(auc(labels, values), 3),
            "auc_measurement": round(auc(test_labels, test_values), 3),
            "false_refusals": f"{int(refused[answerable].sum())}/{int(answerable.sum())}",
            "false_answers": f"{int((~refused)[~answerable].sum())}/{int((~answerable).sum())}",
            "gate_ms_median": round(float(np.median(timings[signal])), 1),
        }
    print(json.dumps(report, indent=2))
    if args.scores:
        args.scores.write_text(
            json.dumps(
                {
                    f"{name} {signal}": {"labels": labels.tolist(), "scores": values.tolist()}
                    for name, by_signal in scores.items()
                    for signal, (labels, values) in by_signal.items()
                }
            )
        )
    return 0


def best_cosine(labels: np.ndarray, values: np.ndarray) -> float:
    """The cut with the best balanced accuracy between answerable and unanswerable questions,
    placed halfway between the scores it separates (the widest margin on both sides)."""
    cuts = np.unique(values)
    accuracy = [
        ((values >= cut)[labels == 1].mean() + (values < cut)[labels == 0].mean()) / 2
        for cut in cuts
    ]
    best = int(np.argmax(accuracy))
    return float((cuts[best] + cuts[best - 1]) / 2) if best > 0 else float(cuts[0])


if __name__ == "__main__":
    raise SystemExit(main())
