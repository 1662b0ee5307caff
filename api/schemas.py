"""Request and response bodies, kept apart from the stored and domain models."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.models import RetrievedChunk
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
    injection_suspect: bool = Field(
        default=False, description="Reads as instructions to the model (kept as quoted data)."
    )

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
                injection_suspect=p.chunk.injection_suspect,
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
    passages: list[PassageOut] = Field(
        default_factory=list, description="What retrieval found before the model failed."
    )
