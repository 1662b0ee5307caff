"""Retrieval benchmark: the product's retriever against gold evidence, with a BM25 baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from pydantic import BaseModel

from core.models import RetrievedChunk
from eval.datasets import EvalQuestion
from eval.metrics import average_precision_at_k, ndcg_at_k, recall_at_k, reciprocal_rank

RetrieveFn = Callable[[str], list[RetrievedChunk]]


class RetrievalScores(BaseModel):
    k: int
    n_questions: int
    recall_at_k: float
    map_at_k: float
    ndcg_at_k: float
    mrr: float
    all_gold_at_k: float
    latency_ms_p50: float
    latency_ms_p95: float


class QuestionResult(BaseModel):
    question_id: str
    gold_ids: list[str]
    ranked_ids: list[str]
    latency_ms: float


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else 0.0


def run_questions(
    retrieve: RetrieveFn,
    questions: list[EvalQuestion],
    on_question: Callable[[QuestionResult], None] | None = None,
) -> list[QuestionResult]:
    results = []
    for question in questions:
        started = time.perf_counter()
        ranked = retrieve(question.question)
        latency_ms = (time.perf_counter() - started) * 1000
        result = QuestionResult(
            question_id=question.question_id,
            gold_ids=sorted(question.gold_unit_ids()),
            ranked_ids=question.to_units(hit.chunk.chunk_id for hit in ranked),
            latency_ms=latency_ms,
        )
        results.append(result)
        if on_question:
            on_question(result)
    return results


def score(results: list[QuestionResult], k: int) -> RetrievalScores:
    """Means over questions that have gold evidence; latency over every question."""
    judged = [r for r in results if r.gold_ids]
    n = len(judged) or 1
    latencies = [r.latency_ms for r in results]

    def mean(metric: Callable[[QuestionResult], float]) -> float:
        return sum(metric(r) for r in judged) / n

    return RetrievalScores(
        k=k,
        n_questions=len(judged),
        recall_at_k=mean(lambda r: recall_at_k(r.ranked_ids, set(r.gold_ids), k)),
        map_at_k=mean(lambda r: average_precision_at_k(r.ranked_ids, set(r.gold_ids), k)),
        ndcg_at_k=mean(lambda r: ndcg_at_k(r.ranked_ids, set(r.gold_ids), k)),
        mrr=mean(lambda r: reciprocal_rank(r.ranked_ids, set(r.gold_ids))),
        all_gold_at_k=mean(lambda r: float(set(r.gold_ids) <= set(r.ranked_ids[:k]))),
        latency_ms_p50=statistics.median(latencies) if latencies else 0.0,
        latency_ms_p95=percentile(latencies, 0.95),
    )
