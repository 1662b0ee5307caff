from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.deps import CurrentPrincipal, PipelineDep, ServicesDep
from api.limits import QuerySlot
from api.metrics import Metrics, metrics_of
from api.schemas import (
    ErrorResponse,
    ModelUnavailableResponse,
    PassageOut,
    QueryRequest,
    QueryResponse,
)
from core.audit import AuditLog
from core.models import Answer, RetrievedChunk
from core.pipeline import (
    AnswerUnavailableError,
    FinalEvent,
    PassagesEvent,
    StreamEvent,
    TokenEvent,
)
from retrieval.filters import Principal

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
    services: ServicesDep,
    principal: CurrentPrincipal,
    request: Request,
    _slot: QuerySlot,
) -> QueryResponse | StreamingResponse:
    """Answer a question from the documents the caller may read, citing each sentence's passage."""
    started = time.perf_counter()
    metrics = metrics_of(request)
    if body.stream:
        # Screened before the stream starts, so that a hostile question still gets its 400.
        pipeline.screen(body.question)
        events = pipeline.stream(body.question, principal, body.filters, body.top_k, body.model)
        # A sync iterator: Starlette runs each step in its thread pool, off the event loop.
        return StreamingResponse(
            _server_sent(events, _Recorder(services.audit, principal, body, started), metrics),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    recorder = _Recorder(services.audit, principal, body, started)
    try:
        result = pipeline.run(body.question, principal, body.filters, body.top_k, body.model)
    except AnswerUnavailableError as error:
        recorder.failed(error.passages, str(error))
        raise
    metrics.observe_answer(result.answer)
    return QueryResponse.from_result(result, recorder.answered(result.answer, result.passages))


class _Recorder:
    """Writes the query's audit row, the same way for the plain and the streamed answer."""

    def __init__(
        self, audit: AuditLog, principal: Principal, body: QueryRequest, started: float
    ) -> None:
        self.audit, self.principal, self.body, self.started = audit, principal, body, started

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def answered(self, answer: Answer, passages: list[RetrievedChunk]) -> int:
        return self.audit.record_query(
            self.principal,
            self.body.question,
            self.body.filters,
            answer,
            passages,
            self._elapsed_ms(),
        )

    def failed(self, passages: list[RetrievedChunk], error: str) -> None:
        self.audit.record_query(
            self.principal,
            self.body.question,
            self.body.filters,
            None,
            passages,
            self._elapsed_ms(),
            error,
        )


def _server_sent(
    events: Iterator[StreamEvent], recorder: _Recorder, metrics: Metrics
) -> Iterator[str]:
    passages: list[RetrievedChunk] = []
    try:
        for event in events:
            if isinstance(event, PassagesEvent):
                passages = event.passages
                out = PassageOut.from_results(event.passages)
                yield _event("passages", {"passages": [p.model_dump() for p in out]})
            elif isinstance(event, TokenEvent):
                yield _event("token", {"text": event.text})
            elif isinstance(event, FinalEvent):
                result = event.result
                metrics.observe_answer(result.answer)
                query_id = recorder.answered(result.answer, result.passages)
                response = QueryResponse.from_result(result, query_id)
                yield _event("final", response.model_dump(mode="json"))
    except AnswerUnavailableError as error:
        recorder.failed(error.passages or passages, str(error))
        yield _error("model_unavailable", str(error))
    except ValueError as error:
        yield _error("invalid_request", str(error))
    except Exception:
        log.exception("streamed query failed")
        recorder.failed(passages, "internal error")
        yield _error("internal_error", "the answer could not be completed")


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _error(code: str, message: str) -> str:
    return _event("error", {"error": {"code": code, "message": message}})
