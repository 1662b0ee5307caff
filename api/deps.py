"""Dependency aliases for route signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.pipeline import QueryPipeline, Services
from retrieval.filters import Principal


def get_pipeline(request: Request) -> QueryPipeline:
    pipeline: QueryPipeline = request.app.state.pipeline
    return pipeline


def get_principal(request: Request) -> Principal:
    services: Services = request.app.state.services
    return services.anonymous_principal()


PipelineDep = Annotated[QueryPipeline, Depends(get_pipeline)]
CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
