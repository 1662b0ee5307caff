from __future__ import annotations

import json
import logging
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import CurrentPrincipal, PipelineDep
from api.limits import QuerySlot
from api.metrics import Metrics, metrics_of
from api.schemas import (
    ErrorResponse,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
)
from generation.pipeline import (
    AnswerUnavailableError,
    FinalEvent,
    PassagesEvent,
    StreamEvent,
    TokenEvent,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["query"])

_STREAM_DOC = (
    'With `"stream": true`: `text/event-stream` with the events `passages` '
    '(`{"passages": [...]}`), `token` (`{"text": "..."}`, repeated), then exactly one `final` '
    '(the complete response, verified) or one `error` (`{"error": {"code", "message"}}`).'
)


@router.post(
    "/query",
    operation_id="query",
    response_model=QueryResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": _STREAM_DOC},
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
) -> QueryResponse | StreamingResponse:
    """Answer a question from the documents the caller may read, citing each sentence's passage."""
    metrics = metrics_of(request)
    if body.stream:
        # Screened before the stream starts, so that a hostile question still gets its 400.
        pipeline.screen(body.question)
        events = pipeline.stream(body.question, principal, body.filters, body.top_k, body.model)
        # A sync iterator: Starlette runs each step in its thread pool, off the event loop.
        return StreamingResponse(
            _server_sent(events, metrics),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    result = pipeline.run(body.question, principal, body.filters, body.top_k, body.model)
    metrics.observe_answer(result.answer)
    return QueryResponse.from_result(result)


def _server_sent(events: Iterator[StreamEvent], metrics: Metrics) -> Iterator[str]:
    """The pipeline's events as server-sent events; the pipeline writes the audit row."""
    try:
        for event in events:
            if isinstance(event, PassagesEvent):
                out = PassageOut.from_results(event.passages)
                yield _event("passages", {"passages": [p.model_dump() for p in out]})
            elif isinstance(event, TokenEvent):
                yield _event("token", {"text": event.text})
            elif isinstance(event, FinalEvent):
                metrics.observe_answer(event.result.answer)
                response = QueryResponse.from_result(event.result)
                yield _event("final", response.model_dump(mode="json"))
    except AnswerUnavailableError as error:
        yield _error("model_unavailable", str(error))
    except ValueError as error:
        yield _error("invalid_request", str(error))
    except Exception:
        log.exception("streamed query failed")
        yield _error("internal_error", "the answer could not be completed")


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error(code: str, message: str) -> str:
    return _event("error", {"error": {"code": code, "message": message}})
