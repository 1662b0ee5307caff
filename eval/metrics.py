"""Ranking metrics over one question's ranked chunk ids and its set of gold chunk ids."""

from __future__ import annotations

import math
from collections.abc import Sequence, Set


def recall_at_k(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """Share of the gold passages found in the top k."""
    return len(gold & set(ranked[:k])) / len(gold) if gold else 0.0


def average_precision_at_k(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """MAP@k's per-question term, normalised by min(|gold|, k) as in TREC's and RIRAG's scoring."""
    hits, total = 0, 0.0
    for rank, chunk_id in enumerate(ranked[:k], start=1):
        if chunk_id in gold:
            hits += 1
            total += hits / rank
    return total / min(len(gold), k) if gold else 0.0


def ndcg_at_k(ranked: Sequence[str], gold: Set[str], k: int) -> float:
    """Binary-relevance nDCG@k."""
    dcg = sum(
        1 / math.log2(rank + 1) for rank, cid in enumerate(ranked[:k], start=1) if cid in gold
    )
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), k) + 1))
    return dcg / ideal if ideal else 0.0


def reciprocal_rank(ranked: Sequence[str], gold: Set[str]) -> float:
    for rank, chunk_id in enumerate(ranked, start=1):
        if chunk_id in gold:
            return 1 / rank
    return 0.0
