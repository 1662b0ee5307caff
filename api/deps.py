"""Dependency aliases for route signatures."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from core.pipeline import QueryPipeline


def get_pipeline(request: Request) -> QueryPipeline:
    pipeline: QueryPipeline = request.app.state.pipeline
    return pipeline


PipelineDep = Annotated[QueryPipeline, Depends(get_pipeline)]
