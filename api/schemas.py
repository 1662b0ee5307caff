"""Request and response bodies, kept apart from the stored and domain models."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, Field, model_validator

from core.auth import ApiKey
from core.catalog import DocumentRecord, DocumentStatus, Job, JobStatus
from core.models import (
    AnswerPart,
    AnswerSentence,
    ModelChoice,
    PartStatus,
    RetrievedChunk,
    Role,
    SearchFilters,
    SupportCheck,
    Usage,
)
from core.pii import pii_kinds
from core.saved import SavedAnswer, SavedStatus
from eval.datasets import DatasetFormat
from generation.drafts import DraftVerdict
from generation.pipeline import QueryResult


class QueryRequest(BaseModel):
    question: str = Field(
        min_length=1, max_length=2000, pattern=r"\S", description="The analyst's question."
    )
    top_k: int | None = Field(default=None, ge=1, le=50, description="Passages to retrieve.")
    filters: SearchFilters | None = Field(
        default=None, description="Restrict the documents searched."
    )
    stream: bool = Field(
        default=False,
        description="Answer as server-sent events: passages, tokens, then the final response.",
    )
    model: ModelChoice = Field(
        default=ModelChoice.AUTO,
        description="auto: the routing rule picks the cheap or premium model; or force one.",
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


class SentenceOut(BaseModel):
    text: str
    citations: list[int] = Field(description="Passage numbers the sentence rests on.")
    support: float | None = Field(description="Support probability; null: not verified.")
    supported: bool | None
    part: int | None = Field(
        default=None, description="The question part (1-based, see `parts`) it answers."
    )
    check: SupportCheck | None = Field(
        default=None,
        description="What decided: quoted (verbatim, no model call), model, or the check that "
        "found a mismatch (quantity, modality, exception, actor, reference).",
    )
    reason: str | None = Field(default=None, description="Why the sentence is not supported.")

    @classmethod
    def from_sentence(cls, sentence: AnswerSentence) -> SentenceOut:
        return cls.model_validate(sentence.model_dump())


class PartOut(BaseModel):
    """One part of the question and what became of it."""

    text: str = Field(description="What the part asks.")
    documents: list[str] = Field(description="Ids of the documents the part names.")
    passages: list[int] = Field(description="Numbers of the passages retrieved for this part.")
    status: PartStatus = Field(
        description="answered: a supported sentence answers it; not_covered: the documents do "
        "not address it; unanswered: passages were found but no supported sentence answers it."
    )

    @classmethod
    def from_part(cls, part: AnswerPart) -> PartOut:
        return cls.model_validate(part.model_dump())


class UsageOut(BaseModel):
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @classmethod
    def from_usage(cls, usage: Usage | None) -> UsageOut | None:
        return None if usage is None else cls.model_validate(usage.model_dump())


class QueryResponse(BaseModel):
    answer: str
    citations: list[CitationOut]
    passages: list[PassageOut]
    model: str
    sentences: list[SentenceOut] = Field(
        default_factory=list,
        description="The sentences, their citations and support.",
    )
    support_score: float | None = Field(
        default=None, description="Share of the answer's sentences found supported."
    )
    refused: bool = Field(
        default=False, description="True: the documents address no part of the question."
    )
    parts: list[PartOut] = Field(
        default_factory=list,
        description="The question's parts in the order asked (one for a single question), each "
        "with its passages and whether it was answered; sentences name the part they answer.",
    )
    usage: UsageOut | None = Field(
        default=None, description="The model that answered, its tokens and their cost."
    )
    timings: dict[str, float] = Field(
        default_factory=dict, description="Milliseconds per pipeline stage."
    )
    query_id: int | None = Field(
        default=None, description="The audit log row of this query (its id in the history)."
    )
    pii: list[str] = Field(
        default_factory=list, description="Kinds of personal data found in the answer."
    )

    @classmethod
    def from_result(cls, result: QueryResult) -> QueryResponse:
        answer = result.answer
        return cls(
            answer=answer.text,
            citations=[CitationOut.model_validate(c.model_dump()) for c in answer.citations],
            passages=PassageOut.from_results(result.passages),
            model=answer.model,
            sentences=[SentenceOut.from_sentence(s) for s in answer.sentences],
            support_score=answer.support_score,
            refused=answer.refused,
            parts=[PartOut.from_part(p) for p in answer.parts],
            usage=UsageOut.from_usage(answer.usage),
            timings={stage: round(ms, 1) for stage, ms in result.timings.items()},
            query_id=result.query_id,
            pii=pii_kinds(answer.text),
        )


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ModelUnavailableResponse(ErrorResponse):
    passages: list[PassageOut] = Field(
        default_factory=list, description="What retrieval found before the model failed."
    )


class DocumentOut(BaseModel):
    """An indexed document, as a caller who may read it sees it."""

    document_id: str
    title: str
    source: str = Field(description="The file it was ingested from (its name, not its path).")
    content_hash: str = Field(description="SHA-256 of the file: the version the chunks hold.")
    chunks: int
    access_groups: list[str]
    metadata: dict[str, Any] = Field(description="Jurisdiction, regulator, type, dates ...")
    ingested_at: dt.datetime

    @classmethod
    def from_record(cls, record: DocumentRecord) -> DocumentOut:
        return cls.model_validate(record.model_dump() | {"source": record.file_name})


class SuspectChunkOut(BaseModel):
    chunk_id: str
    section: str
    reasons: list[str]
    quarantined: bool = Field(description="Kept out of retrieval (REGULUS_INJECTION_POLICY).")


class JobDocumentOut(BaseModel):
    source: str
    document_id: str | None
    status: DocumentStatus
    chunks: int
    error: str | None
    duration_ms: float | None
    suspect_chunks: list[SuspectChunkOut] = Field(
        default_factory=list, description="Chunks the prompt-injection screen flagged."
    )
    flagged_answers: int = Field(
        default=0, description="Saved answers citing it that this job marked needs_review."
    )


class JobOut(BaseModel):
    """An ingestion job with per-document progress."""

    job_id: str
    status: JobStatus
    requested_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    total: int
    done: int
    counts: dict[str, int] = Field(description="Documents by status: ingested, unchanged, failed.")
    documents: list[JobDocumentOut]
    flagged_answers: int = Field(
        default=0, description="Saved answers the job marked needs_review (re-check them)."
    )

    @classmethod
    def from_job(cls, job: Job) -> JobOut:
        return cls.model_validate(job.model_dump())


class KeyCreate(BaseModel):
    role: Role = Role.ANALYST
    groups: list[str] = Field(default_factory=list, description="Access groups of the holder.")
    name: str = Field(default="", max_length=200, description="Who or what holds the key.")


class KeyCreated(ApiKey):
    key: str = Field(description="The secret, shown this once: it is stored only as a hash.")


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


# saved answers


class SaveRequest(BaseModel):
    query_id: int = Field(
        ge=1, le=2**31 - 1, description="The `query_id` of one of your answered queries."
    )
    title: str = Field(min_length=1, max_length=200)
    notes: str = Field(default="", max_length=10_000)
    shared_with: list[str] = Field(
        default_factory=list, max_length=50, description="Groups (of yours) who may read it."
    )


class SavedUpdate(BaseModel):
    """Only the fields given change; `shared_with` replaces the groups shared with."""

    title: str | None = Field(default=None, min_length=1, max_length=200)
    notes: str | None = Field(default=None, max_length=10_000)
    shared_with: list[str] | None = Field(default=None, max_length=50)


class SavedAnswerSummary(BaseModel):
    """A saved answer as listed: its status and what it cites, without the texts."""

    saved_id: str
    title: str
    owner: str
    question: str
    status: SavedStatus
    reasons: list[str]
    shared_with: list[str]
    created_at: dt.datetime
    checked_at: dt.datetime | None
    reviewed_at: dt.datetime | None
    documents: list[str] = Field(description="The documents it cites.")
    citations: int

    @classmethod
    def from_saved(cls, answer: SavedAnswer) -> SavedAnswerSummary:
        return cls(
            **answer.model_dump(
                include={
                    "saved_id",
                    "title",
                    "owner",
                    "question",
                    "status",
                    "reasons",
                    "shared_with",
                    "created_at",
                    "checked_at",
                    "reviewed_at",
                }
            ),
            documents=sorted(answer.document_ids),
            citations=len(answer.citations),
        )


class DraftSentenceIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000, description="A sentence of the draft.")
    document_id: str | None = Field(
        default=None, max_length=200, description="Check it against this document only."
    )
    section: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="With document_id: check it against this section (e.g. 'Article 33').",
    )

    @model_validator(mode="after")
    def _section_needs_document(self) -> DraftSentenceIn:
        if self.section is not None and self.document_id is None:
            raise ValueError("a section needs its document_id")
        return self


class VerifyRequest(BaseModel):
    sentences: list[DraftSentenceIn] = Field(min_length=1, max_length=50)


class VerifiedSentenceOut(SentenceOut):
    passages: list[PassageOut] = Field(
        description="What the sentence was checked against; citations number into this list."
    )

    @classmethod
    def from_verdict(cls, verdict: DraftVerdict) -> VerifiedSentenceOut:
        sentence = SentenceOut.from_sentence(verdict.sentence)
        return cls(**sentence.model_dump(), passages=PassageOut.from_results(verdict.passages))


class VerifyResponse(BaseModel):
    sentences: list[VerifiedSentenceOut]
    support_score: float = Field(description="Share of the sentences found supported.")
