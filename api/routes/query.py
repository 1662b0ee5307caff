from __future__ import annotations

from fastapi import APIRouter

from api.deps import CurrentPrincipal, PipelineDep
from api.schemas import (
    CitationOut,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
    SentenceOut,
)

router = APIRouter(prefix="/v1", tags=["query"])


@router.post(
    "/query",
    operation_id="query",
    responses={503: {"model": ModelUnavailableResponse, "description": "Model server down"}},
)
def query(body: QueryRequest, pipeline: PipelineDep, principal: CurrentPrincipal) -> QueryResponse:
    """Answer a question from the documents the caller may read, citing each sentence's passage."""
    result = pipeline.run(body.question, principal, body.filters, body.top_k)
    return QueryResponse(
        answer=result.answer.text,
        citations=[CitationOut.model_validate(c.model_dump()) for c in result.answer.citations],
        passages=PassageOut.from_results(result.passages),
        model=result.answer.model,
        sentences=[SentenceOut.from_sentence(s) for s in result.answer.sentences],
        support_score=result.answer.support_score,
        refused=result.answer.refused,
    )
