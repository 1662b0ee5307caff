"""The passages an answer is written from: each part of the question searched on its own, then
merged so that every part keeps its best passages within one passage budget."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import AnswerPart, Principal, RetrievedChunk, SearchFilters
from generation.analysis import QuestionAnalysis, QuestionPart
from retrieval.retriever import Retriever


@dataclass(frozen=True)
class PartedContext:
    """The merged passages, numbered from 1 as the answer cites them, and each part's numbers."""

    passages: list[RetrievedChunk]
    parts: list[AnswerPart]


class PartRetriever:
    """Searches each part (a document the part names narrows its search to that document), then
    interleaves the parts' rankings, best first, without repeats, up to the budget; a passage that
    reference expansion added comes right after the hit it joins, outside the budget.

    A single-part question is searched exactly as before: one search, `top_k` passages.
    """

    def __init__(self, retriever: Retriever, per_part: int = 3, max_passages: int = 12) -> None:
        if per_part < 1 or max_passages < 1:
            raise ValueError("per_part and max_passages must be at least 1")
        self.retriever = retriever
        self.per_part = per_part
        self.max_passages = max_passages

    def run(
        self,
        analysis: QuestionAnalysis,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
        timings: dict[str, float] | None = None,
    ) -> PartedContext:
        limit = top_k or self.retriever.top_k
        if not analysis.multi_part:
            part = analysis.parts[0]
            hits = self.retriever.run(
                part.query, principal, _narrowed(filters, part), limit, timings
            )
            return PartedContext(hits, [_part(part, list(range(1, len(hits) + 1)))])
        rankings = [
            self.retriever.run(part.query, principal, _narrowed(filters, part), limit, timings)
            for part in analysis.parts
        ]
        budget = min(self.max_passages, max(limit, self.per_part * len(rankings)))
        found = [[hit for hit in ranking if hit.joins is None] for ranking in rankings]
        joined: list[dict[str, list[RetrievedChunk]]] = [{} for _ in rankings]
        for index, ranking in enumerate(rankings):
            for hit in ranking:
                if hit.joins is not None:
                    joined[index].setdefault(hit.joins, []).append(hit)
        passages: list[RetrievedChunk] = []
        numbers: dict[str, int] = {}
        served: list[list[int]] = [[] for _ in rankings]
        searched = 0
        for depth in range(max(map(len, found), default=0)):
            for index, ranking in enumerate(found):
                if depth >= len(ranking):
                    continue
                hit = ranking[depth]
                if hit.chunk.chunk_id not in numbers:
                    if searched >= budget:
                        continue
                    searched += 1
                # The passages joined to the hit come with it, outside the budget.
                for passage in [hit, *joined[index].get(hit.chunk.chunk_id, [])]:
                    chunk_id = passage.chunk.chunk_id
                    if chunk_id not in numbers:
                        passages.append(passage)
                        numbers[chunk_id] = len(passages)
                    served[index].append(numbers[chunk_id])
        parts = [_part(part, served[i]) for i, part in enumerate(analysis.parts)]
        return PartedContext(passages, parts)


def _narrowed(filters: SearchFilters | None, part: QuestionPart) -> SearchFilters | None:
    """The caller's filters, narrowed to the documents the part names (within the caller's own
    document filter, when there is one)."""
    if not part.documents:
        return filters
    base = filters or SearchFilters()
    allowed = base.document_ids
    named = [d for d in part.documents if allowed is None or d in allowed]
    if not named:
        return filters
    return base.model_copy(update={"document_ids": named})


def _part(part: QuestionPart, numbers: list[int]) -> AnswerPart:
    return AnswerPart(
        text=part.text,
        documents=list(part.documents),
        passages=numbers,
        standalone=part.standalone if part.standalone != part.text else None,
    )
