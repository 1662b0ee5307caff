import math

import pytest

from eval.metrics import average_precision_at_k, ndcg_at_k, recall_at_k, reciprocal_rank

RANKED = ["a", "x", "b", "y", "c"]
GOLD = {"a", "b", "z"}


class TestRankingMetrics:
    def test_recall_counts_gold_in_the_top_k(self) -> None:
        assert recall_at_k(RANKED, GOLD, k=1) == pytest.approx(1 / 3)
        assert recall_at_k(RANKED, GOLD, k=5) == pytest.approx(2 / 3)

    def test_average_precision(self) -> None:
        # hits at ranks 1 and 3: (1/1 + 2/3) / min(3, 5)
        assert average_precision_at_k(RANKED, GOLD, k=5) == pytest.approx((1 + 2 / 3) / 3)
        assert average_precision_at_k(["x", "a"], {"a"}, k=1) == 0.0

    def test_ndcg(self) -> None:
        dcg = 1 + 1 / math.log2(4)
        ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
        assert ndcg_at_k(RANKED, GOLD, k=5) == pytest.approx(dcg / ideal)
        assert ndcg_at_k(["a", "b", "z"], GOLD, k=3) == pytest.approx(1.0)

    def test_reciprocal_rank(self) -> None:
        assert reciprocal_rank(RANKED, {"b"}) == pytest.approx(1 / 3)
        assert reciprocal_rank(RANKED, {"q"}) == 0.0

    def test_no_gold_scores_zero(self) -> None:
        assert recall_at_k(RANKED, set(), 5) == average_precision_at_k(RANKED, set(), 5) == 0.0
