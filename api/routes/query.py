from __future__ import annotations

import time

from fastapi import APIRouter

from api.deps import CurrentPrincipal, PipelineDep, ServicesDep
from api.schemas import (
    CitationOut,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
)
from core.pii import pii_kinds
from core.pipeline import AnswerUnavailableError

router = APIRouter(prefix="/v1", tags=["query"])


@router.post(
    "/query",
    operation_id="query",
    responses={503: {"model": ModelUnavailableResponse, "description": "Model server down"}},
)
def query(
    body: QueryRequest, pipeline: PipelineDep, services: ServicesDep, principal: CurrentPrincipal
) -> QueryResponse:
    """Answer a question from the documents the caller may read, citing each sentence's passage."""
    started = time.perf_counter()
    try:
        result = pipeline.run(body.question, principal, body.filters, body.top_k)
    except AnswerUnavailableError as error:
        elapsed_ms = (time.perf_counter() - started) * 1000
        services.audit.record_query(
            principal, body.question, body.filters, None, error.passages, elapsed_ms, str(error)
        )
        raise
    elapsed_ms = (time.perf_counter() - started) * 1000
    query_id = services.audit.record_query(
        principal, body.question, body.filters, result.answer, result.passages, elapsed_ms
    )
    return QueryResponse(
        answer=result.answer.text,
        citations=[CitationOut.model_validate(c.model_dump()) for c in result.answer.citations],
        passages=PassageOut.from_results(result.passages),
        model=result.answer.model,
        query_id=query_id,
        pii=pii_kinds(result.answer.text),
    )
