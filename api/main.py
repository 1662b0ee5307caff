"""The FastAPI application: routers, error bodies and the services' lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.routes import health, query
from api.schemas import ErrorDetail, ErrorResponse, ModelUnavailableResponse, PassageOut
from core.pipeline import AnswerUnavailableError, Services
from core.settings import Settings, get_settings


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
        app.state.services = services
        app.state.pipeline = services.query_pipeline()
        try:
            yield
        finally:
            services.close()

    app = FastAPI(
        title="Regulus",
        version="0.1.0",
        description="Cited answers from regulatory documents.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    app.include_router(query.router)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
        body = ErrorResponse(
            error=ErrorDetail(code="invalid_request", message=_validation_message(error))
        )
        return JSONResponse(status_code=422, content=body.model_dump())

    @app.exception_handler(AnswerUnavailableError)
    async def model_unavailable(_: Request, error: AnswerUnavailableError) -> JSONResponse:
        body = ModelUnavailableResponse(
            error=ErrorDetail(code="model_unavailable", message=str(error)),
            passages=PassageOut.from_results(error.passages),
        )
        return JSONResponse(status_code=503, content=body.model_dump())

    return app
