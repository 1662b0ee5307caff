"""Domain types passed between ingestion, retrieval, generation and the API."""

from __future__ import annotations

import datetime as dt
import enum

from pydantic import BaseModel, Field


class Role(enum.StrEnum):
    """What a principal may do: analysts query, evaluators also run evaluations, admins all."""

    ANALYST = "analyst"
    EVALUATOR = "evaluator"
    ADMIN = "admin"


class SearchMode(enum.StrEnum):
    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


class FusionMethod(enum.StrEnum):
    """How hybrid search merges its dense and sparse candidate lists (Qdrant's two fusions).

    `dbsf` adds scores normalised per list (mean ± 3 standard deviations), so a passage far ahead
    in one list counts for more than its rank; `rrf` adds reciprocal ranks and ignores margins.
    """

    DBSF = "dbsf"
    RRF = "rrf"


class ModelChoice(enum.StrEnum):
    """Which model answers: the routing rule's pick, or the one the caller asks for."""

    AUTO = "auto"
    CHEAP = "cheap"
    PREMIUM = "premium"


class UnsupportedPolicy(enum.StrEnum):
    """What verification does with a sentence that no retrieved passage supports."""

    FLAG = "flag"  # kept, marked supported=False
    DROP = "drop"  # removed from the answer


class SupportCheck(enum.StrEnum):
    """What decided a sentence's verdict in verification.

    `quoted`: a verbatim span of the passage it cites, supported without a model call; `model`:
    the support model's score against the threshold, the deterministic checks finding nothing;
    the others: the deterministic check that found the sentence at odds with its passage.
    """

    QUOTED = "quoted"
    MODEL = "model"
    QUANTITY = "quantity"
    MODALITY = "modality"
    EXCEPTION = "exception"
    ACTOR = "actor"
    REFERENCE = "reference"


class EmbedBackend(enum.StrEnum):
    """How the embedding model runs: PyTorch, or an ONNX export of it (fp32 or int8 weights)."""

    TORCH = "torch"
    ONNX = "onnx"
    ONNX_INT8 = "onnx-int8"


class DocumentFields(BaseModel):
    """Document-level metadata that every chunk carries, so that filters run inside the store."""

    document_id: str
    document_title: str
    jurisdiction: str | None = None
    regulator: str | None = None
    document_type: str | None = None
    effective_date: dt.date | None = None
    version: str | None = None
    access_groups: list[str] = Field(
        default_factory=list, description="Groups allowed to read it; empty: the default policy."
    )
    aliases: list[str] = Field(
        default_factory=list,
        description="Other names questions use for it ('the cookie law'), beside its title's.",
    )


class Section(BaseModel):
    """A structural unit of a parsed document: its heading path and its text."""

    path: list[str] = Field(description="Headings from the document root, e.g. ['Chapter IV', ...]")
    text: str
    page: int | None = None
    ref: str | None = Field(default=None, description="The rule or article id, e.g. '3.2.1'.")
    chunk_id: str | None = Field(
        default=None, description="Set by pre-split sources: keep the section as one chunk."
    )
    table_header: str | None = Field(default=None, description="A table's header row.")
    table_rows: list[str] | None = Field(
        default=None, description="A table's body rows: chunks split between rows, never inside."
    )


class Document(DocumentFields):
    """A parsed source document, before chunking."""

    source: str
    content_hash: str
    sections: list[Section]


class Chunk(DocumentFields):
    """The unit that is embedded, stored and cited."""

    chunk_id: str
    section: str = Field(description="The heading path joined with ' > '.")
    section_path: str = Field(
        default="", description="The heading path down to the paragraphs covered: '... > (1)–(2)'."
    )
    section_ref: str | None = None
    text: str
    source: str
    content_hash: str
    page: int | None = None
    injection_suspect: bool = Field(
        default=False, description="The text reads as instructions aimed at the model."
    )
    injection_reasons: list[str] = Field(default_factory=list, description="The rules it hit.")
    quarantine: str | None = Field(
        default=None, description="Why retrieval never returns it (e.g. 'prompt_injection')."
    )

    def embedding_text(self) -> str:
        return embedding_header(self.document_title, self.section) + self.text


def embedding_header(document_title: str, section: str) -> str:
    """Title and headings travel with the text so that the embedding knows where it stands."""
    return f"{document_title}\n{section}\n"


class RetrievedChunk(BaseModel):
    chunk: Chunk
    score: float
    vector: list[float] | None = Field(
        default=None,
        exclude=True,
        repr=False,
        description="The chunk's stored dense vector, when the store returned it: the query path "
        "compares passages with the question without embedding them again.",
    )
    joins: str | None = Field(
        default=None,
        description="The retrieved passage (chunk id) a cross-reference brought this one in for: "
        "the hit cites it, or it cites the hit; None for a passage the search itself found.",
    )


class Citation(BaseModel):
    n: int = Field(description="The passage number the answer cites as [n].")
    document_id: str
    document_title: str
    section: str
    section_path: str = Field(description="Down to the paragraphs: '... > Article 33 > (1)'.")
    page: int | None = None
    chunk_id: str
    quote: str = Field(description="The span of the passage that backs the cited sentence.")


class AnswerSentence(BaseModel):
    """One sentence of an answer, the passages it cites and whether they were found to back it."""

    text: str = Field(description="The sentence without its [n] markers.")
    citations: list[int] = Field(default_factory=list, description="Passage numbers it cites.")
    support: float | None = Field(
        default=None, description="Support probability from the verifier; None: not verified."
    )
    supported: bool | None = None
    check: SupportCheck | None = Field(default=None, description="What decided the verdict.")
    reason: str | None = Field(
        default=None, description="Why it is unsupported, e.g. 'duration 48 hours not in ...'."
    )
    part: int | None = Field(
        default=None, description="The question part (1-based) the sentence answers."
    )


class PartStatus(enum.StrEnum):
    """What became of one part of a question."""

    ANSWERED = "answered"  # at least one supported sentence answers it
    NOT_COVERED = "not_covered"  # nothing retrieved is close enough to answer it from
    UNANSWERED = "unanswered"  # passages were found, but no (supported) sentence answers it


class AnswerPart(BaseModel):
    """One part of the question: what it asks, the documents it names, the passages found for it."""

    text: str
    documents: list[str] = Field(default_factory=list, description="Document ids it names.")
    passages: list[int] = Field(
        default_factory=list, description="Numbers of the passages retrieved for this part."
    )
    status: PartStatus = PartStatus.ANSWERED
    standalone: str | None = Field(
        default=None,
        description="The part with the clause it refers back to ('how long must we keep them'), "
        "as it was searched; None when its text stands alone.",
    )

    @property
    def asked(self) -> str:
        """What the part asks, on its own."""
        return self.standalone or self.text


class Usage(BaseModel):
    """What one answer cost: the model that wrote it, its tokens and their price."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class Answer(BaseModel):
    text: str
    citations: list[Citation]
    model: str
    sentences: list[AnswerSentence] = Field(default_factory=list)
    support_score: float | None = Field(
        default=None, description="Share of sentences the verifier found supported."
    )
    refused: bool = Field(default=False, description="The corpus does not address the question.")
    usage: Usage | None = None
    parts: list[AnswerPart] = Field(
        default_factory=list, description="The question's parts, in the order it asks them."
    )


class StructuredOutput(enum.StrEnum):
    """How the model is asked for sentences with their passage numbers.

    `json_schema`: OpenAI `response_format` json_schema (vLLM guided decoding).
    `json_object`: `{"type": "json_object", "schema": ...}`, llama.cpp-python's spelling.
    `text`: plain sentences ending in [n] markers.
    `auto`: json_schema first; when the server rejects it, json_object, then text.
    """

    AUTO = "auto"
    JSON_SCHEMA = "json_schema"
    JSON_OBJECT = "json_object"
    TEXT = "text"


class Principal(BaseModel):
    """Who is asking: access is granted when a document's groups and the caller's intersect."""

    subject: str
    groups: list[str] = Field(default_factory=list)
    role: Role = Role.ANALYST


class SearchFilters(BaseModel):
    document_ids: list[str] | None = None
    jurisdictions: list[str] | None = None
    regulators: list[str] | None = None
    document_types: list[str] | None = None
    effective_from: dt.date | None = Field(default=None, description="Effective on or after.")
    effective_to: dt.date | None = Field(default=None, description="Effective on or before.")
