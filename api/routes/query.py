from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import CurrentPrincipal, PipelineDep
from api.limits import QuerySlot
from api.metrics import metrics_of
from api.schemas import (
    CitationOut,
    ErrorResponse,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
)

router = APIRouter(prefix="/v1", tags=["query"])


@router.post(
    "/query",
    operation_id="query",
    responses={
        400: {"model": ErrorResponse, "description": "The question reads as prompt injection"},
        429: {"model": ErrorResponse, "description": "Rate limited (see Retry-After)"},
        503: {
            "model": ModelUnavailableResponse,
            "description": "Model server down (with the passages), or all answer slots busy",
        },
    },
)
def query(
    body: QueryRequest,
    pipeline: PipelineDep,
    principal: CurrentPrincipal,
    request: Request,
    _slot: QuerySlot,
) -> QueryResponse:
    """Answer a question from the documents the caller may read, citing each sentence's passage."""
    result = pipeline.run(body.question, principal, body.filters, body.top_k)
    metrics_of(request).observe_answer(result.answer)
    return QueryResponse(
        answer=result.answer.text,
        citations=[CitationOut.model_validate(c.model_dump()) for c in result.answer.citations],
        passages=PassageOut.from_results(result.passages),
        model=result.answer.model,
    )
