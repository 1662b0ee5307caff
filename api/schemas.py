"""Request and response bodies, kept apart from the stored and domain models."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.auth import ApiKey
from core.models import RetrievedChunk, Role
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
    query_id: int | None = Field(
        default=None, description="The audit log row of this query (its id in the history)."
    )
    pii: list[str] = Field(
        default_factory=list, description="Kinds of personal data found in the answer."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelUnavailableResponse(ErrorResponse):
    passages: list[PassageOut] = Field(description="What retrieval found before the model failed.")


class KeyCreate(BaseModel):
    role: Role = Role.ANALYST
    groups: list[str] = Field(default_factory=list, description="Access groups of the holder.")
    name: str = Field(default="", max_length=200, description="Who or what holds the key.")


class KeyCreated(ApiKey):
    key: str = Field(description="The secret, shown this once: it is stored only as a hash.")
