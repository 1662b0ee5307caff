from __future__ import annotations

from fastapi import APIRouter

from api.deps import PipelineDep
from api.schemas import (
    CitationOut,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
)

router = APIRouter(prefix="/v1", tags=["query"])


@router.post(
    "/query",
    operation_id="query",
    responses={503: {"model": ModelUnavailableResponse, "description": "Model server down"}},
)
def query(body: QueryRequest, pipeline: PipelineDep) -> QueryResponse:
    """Answer a question from the indexed documents, citing the passages each sentence rests on."""
    result = pipeline.run(body.question, body.top_k)
    return QueryResponse(
        answer=result.answer.text,
        citations=[CitationOut.model_validate(c.model_dump()) for c in result.answer.citations],
        passages=PassageOut.from_results(result.passages),
        model=result.answer.model,
    )
