from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import ServicesDep
from api.services import Services

router = APIRouter(tags=["health"])
_MODEL_PROBE_TIMEOUT_S = 3.0


class ComponentStatus(BaseModel):
    ok: bool
    detail: str
    latency_ms: float


class Readiness(BaseModel):
    status: str  # "ready" or "unavailable"
    components: dict[str, ComponentStatus]


@router.get("/healthz", operation_id="healthz")
def healthz() -> dict[str, str]:
    """The process is up and serving requests."""
    return {"status": "ok"}


def _probe(check: Callable[[], str]) -> ComponentStatus:
    started = time.perf_counter()
    try:
        detail, ok = check(), True
    except Exception as error:  # any failure means "not ready"; the detail says which
        detail, ok = f"{type(error).__name__}: {error}", False
    return ComponentStatus(ok=ok, detail=detail, latency_ms=(time.perf_counter() - started) * 1000)


def _vector_store(services: Services) -> str:
    return f"{services.store.count()} chunks"


def _sql_store(services: Services) -> str:
    with services.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    return services.engine.dialect.name


def _model_server(services: Services) -> str:
    settings = services.settings
    if not settings.llm_base_url:
        return "none configured: extractive answers"
    response = httpx.get(
        settings.llm_base_url.rstrip("/") + "/models",
        headers={"Authorization": f"Bearer {settings.llm_api_key}"},
        timeout=_MODEL_PROBE_TIMEOUT_S,
    )
    response.raise_for_status()
    return settings.llm_base_url


@router.get(
    "/readyz",
    operation_id="readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A component is unreachable"}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when the vector store, the SQL store and the model server (if any) all answer."""
    components = {
        "vector_store": _probe(lambda: _vector_store(services)),
        "sql_store": _probe(lambda: _sql_store(services)),
        "model_server": _probe(lambda: _model_server(services)),
    }
    ready = all(component.ok for component in components.values())
    body = Readiness(status="ready" if ready else "unavailable", components=components)
    return JSONResponse(status_code=200 if ready else 503, content=body.model_dump())
