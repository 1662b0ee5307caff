"""Request and response bodies, kept apart from the stored and domain models."""

from __future__ import annotations

from pydantic import BaseModel, Field

from core.models import AnswerSentence, RetrievedChunk
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


class SentenceOut(BaseModel):
    text: str
    citations: list[int] = Field(description="Passage numbers the sentence rests on.")
    support: float | None = Field(description="Support probability; null: not verified.")
    supported: bool | None

    @classmethod
    def from_sentence(cls, sentence: AnswerSentence) -> SentenceOut:
        return cls.model_validate(sentence.model_dump())


class QueryResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    passages: list[PassageOut]
    model: str
    sentences: list[SentenceOut] = Field(
        default_factory=list, description="The answer's sentences and their verification."
    )
    support_score: float | None = Field(
        default=None, description="Share of the answer's sentences found supported."
    )
    refused: bool = Field(
        default=False, description="True: the documents do not address the question."
    )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelUnavailableResponse(ErrorResponse):
    passages: list[PassageOut] = Field(description="What retrieval found before the model failed.")
