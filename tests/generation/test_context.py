"""The part retriever's merge of the parts' rankings (the retriever is a stand-in here: the
rankings it returns are the input under test)."""

from core.models import Principal, RetrievedChunk, Role
from generation.analysis import QuestionAnalysis, QuestionPart
from generation.context import PartRetriever
from tests.helpers import retrieved

PRINCIPAL = Principal(subject="analyst", role=Role.ANALYST, groups=["public"])


class RankingsByQuery:
    top_k = 2

    def __init__(self, rankings: dict[str, list[RetrievedChunk]]) -> None:
        self.rankings = rankings

    def run(self, query: str, *_: object, **__: object) -> list[RetrievedChunk]:
        return self.rankings[query]


def analysis(*queries: str) -> QuestionAnalysis:
    return QuestionAnalysis(
        question=" ".join(queries), parts=tuple(QuestionPart(q, q) for q in queries)
    )


class TestPartRetriever:
    def test_a_cited_passage_follows_the_hit_citing_it_outside_the_budget(self) -> None:
        rankings = {
            "a": [
                retrieved("a1"),
                retrieved("a2"),
                retrieved("a1-cites", joins="a1"),
            ],
            "b": [retrieved("b1"), retrieved("b2")],
        }
        context = PartRetriever(RankingsByQuery(rankings), per_part=1, max_passages=2).run(  # type: ignore[arg-type]
            analysis("a", "b"), PRINCIPAL
        )
        assert [p.chunk.chunk_id for p in context.passages] == ["a1", "a1-cites", "b1"]
        assert [part.passages for part in context.parts] == [[1, 2], [3]]

    def test_a_cited_passage_comes_only_with_the_hit_citing_it(self) -> None:
        rankings = {
            "a": [
                retrieved("a1"),
                retrieved("a2"),
                retrieved("a2-cites", joins="a2"),
            ],
            "b": [retrieved("b1")],
        }
        context = PartRetriever(RankingsByQuery(rankings), per_part=1, max_passages=2).run(  # type: ignore[arg-type]
            analysis("a", "b"), PRINCIPAL
        )
        assert [p.chunk.chunk_id for p in context.passages] == ["a1", "b1"]
