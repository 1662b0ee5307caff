"""The FastAPI application: routers, error bodies and the services' lifetime."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import AUTH_ERRORS
from api.limits import V1_ERROR_RESPONSES, AuthGuard, RateLimited, install_limits
from api.metrics import install_metrics
from api.routes import (
    audit,
    documents,
    eval,
    health,
    history,
    ingest,
    keys,
    query,
    saved,
    usage,
    verify,
    web,
)
from api.schemas import ErrorDetail, ErrorResponse, ModelUnavailableResponse, PassageOut
from api.services import Services
from core.settings import Settings, get_settings
from eval.jobs import EvalJobs, judge_config
from generation.pipeline import AnswerUnavailableError

log = logging.getLogger(__name__)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def _validation_message(error: RequestValidationError) -> str:
    problems = []
    for problem in error.errors():
        location = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
        problems.append(f"{location or 'body'}: {problem.get('msg', 'invalid')}")
    return "; ".join(problems) or "invalid request"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services(settings)
        services.serve_queries()
        app.state.services = services
        app.state.pipeline = services.query_pipeline()
        # Set at shutdown: background jobs stop after what they have in hand, resumable.
        app.state.stopping = threading.Event()
        services.ingestor().recover()  # jobs a dead process left: interrupted
        # One ingestion job at a time, beside the request threads.
        app.state.ingest_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
        # One evaluation run at a time; it answers through the same pipeline as /v1/query.
        app.state.eval_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eval")
        app.state.eval_jobs = EvalJobs(
            settings.data_dir / "eval-runs",
            services.query_pipeline(audited=False),
            services.store,
            services.embedder,
            app.state.eval_worker,
            judge_config(settings),
            stopping=app.state.stopping,
        )
        app.state.eval_jobs.resume_interrupted()
        app.state.auth_guard = AuthGuard(
            services.audit,
            settings.auth_failures_per_minute,
            settings.auth_failure_burst,
            settings.audit_denial_window_s,
        )
        try:
            yield
        finally:
            app.state.stopping.set()
            app.state.eval_worker.shutdown(wait=True, cancel_futures=True)
            app.state.ingest_worker.shutdown(wait=True, cancel_futures=True)
            app.state.auth_guard.flush()
            services.close()

    app = FastAPI(
        title="Regulus",
        version="0.1.0",
        description="Cited answers from regulatory documents.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(web.router)
    # history before query: /v1/query/history is its own path.
    for router in (history, query, verify, documents, ingest, keys, audit, usage, eval, saved):
        app.include_router(
            router.router,
            dependencies=[RateLimited],
            responses={**V1_ERROR_RESPONSES, **AUTH_ERRORS},
        )
    install_limits(app, settings)
    install_metrics(app)  # last: its middleware is outermost, so it counts every rejection

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        body = ErrorResponse(
            error=ErrorDetail(code="invalid_request", message=_validation_message(error))
        )
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        code = getattr(error, "code", None) or _HTTP_CODES.get(error.status_code, "http_error")
        body = ErrorResponse(error=ErrorDetail(code=code, message=str(error.detail)))
        return JSONResponse(
            status_code=error.status_code, content=body.model_dump(), headers=error.headers
        )

    @app.exception_handler(Exception)
    async def internal_error(_: Request, error: Exception) -> JSONResponse:
        # Logged by the server; the caller gets the usual error body, never a plain-text page.
        log.error("unhandled error", exc_info=error)
        body = ErrorResponse(
            error=ErrorDetail(code="internal_error", message="the request could not be completed")
        )
        return JSONResponse(status_code=500, content=body.model_dump())

    @app.exception_handler(AnswerUnavailableError)
    async def model_unavailable(_: Request, error: AnswerUnavailableError) -> JSONResponse:
        body = ModelUnavailableResponse(
            error=ErrorDetail(code="model_unavailable", message=str(error)),
            passages=PassageOut.from_results(error.passages),
        )
        return JSONResponse(status_code=503, content=body.model_dump())

    return app
