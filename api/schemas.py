"""Request and response bodies, kept apart from the stored and domain models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field

from core.models import RetrievedChunk
from eval.datasets import DatasetFormat
from retrieval.filters import SearchFilters


class QueryRequest(BaseModel):
    question: str = Field(min_length=1, max_length=2000, description="The analyst's question.")
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages to retrieve.")
    filters: SearchFilters | None = Field(
        default=None, description="Restrict the documents searched."
    )


class CitationOut(BaseModel):
    n: int
    document_id: str
    document_title: str
    section: str
    section_path: str
    page: int | None
    chunk_id: str
    quote: str


class PassageOut(BaseModel):
    n: int
    chunk_id: str
    document_id: str
    document_title: str
    section: str
    section_path: str
    page: int | None
    score: float
    text: str

    @classmethod
    def from_results(cls, passages: list[RetrievedChunk]) -> list[PassageOut]:
        """Numbered from 1, as the answer cites them."""
        return [
            cls(
                n=n,
                chunk_id=p.chunk.chunk_id,
                document_id=p.chunk.document_id,
                document_title=p.chunk.document_title,
                section=p.chunk.section,
                section_path=p.chunk.section_path or p.chunk.section,
                page=p.chunk.page,
                score=p.score,
                text=p.chunk.text,
            )
            for n, p in enumerate(passages, start=1)
        ]


class QueryResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    passages: list[PassageOut]
    model: str


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelUnavailableResponse(ErrorResponse):
    passages: list[PassageOut] = Field(description="What retrieval found before the model failed.")


class EvalRunRequest(BaseModel):
    name: str = Field(default="dataset", max_length=200, description="A label for the run.")
    format: DatasetFormat | None = Field(default=None, description="Default: detected.")
    questions: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=20000,
        description="Question records in a supported format (regulus, xrefrag, obliqa-mp).",
    )
    limit: int | None = Field(default=None, ge=1, description="Only the first N questions.")
    k: int = Field(default=10, ge=1, le=100, description="Cut-off of the ranking metrics.")
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages per answer.")
    judge: bool = Field(default=False, description="LLM-judged RAGAS metrics (needs a judge).")
    ragas: bool = Field(default=True, description="RAGAS metrics at all.")


class EvalRunOut(BaseModel):
    run_id: str
    dataset: str
    format: DatasetFormat
    status: str
    done: int
    total: int
    k: int
    top_k: int | None
    judge_model: str | None
    requested_by: str
    error: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    summary: dict[str, Any] | None = Field(default=None, description="Figures, once finished.")


class EvalRunList(BaseModel):
    items: list[EvalRunOut]
    total: int
    limit: int
    offset: int
