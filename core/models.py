"""Domain types passed between ingestion, retrieval, generation and the API."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Section(BaseModel):
    """A structural unit of a parsed document: its heading path and its text."""

    path: list[str] = Field(description="Headings from the document root, e.g. ['Chapter IV', ...]")
    text: str
    page: int | None = None


class Document(BaseModel):
    """A parsed source document, before chunking."""

    document_id: str
    title: str
    source: str
    content_hash: str
    sections: list[Section]


class Chunk(BaseModel):
    """The unit that is embedded, stored and cited."""

    chunk_id: str
    document_id: str
    document_title: str
    section: str = Field(description="The heading path joined with ' > '.")
    text: str
    source: str
    content_hash: str
    page: int | None = None

    def embedding_text(self) -> str:
        return embedding_header(self.document_title, self.section) + self.text


def embedding_header(document_title: str, section: str) -> str:
    """Title and headings travel with the text so that the embedding knows where it stands."""
    return f"{document_title}\n{section}\n"


class RetrievedChunk(BaseModel):
    chunk: Chunk
    score: float


class Citation(BaseModel):
    n: int = Field(description="The passage number the answer cites as [n].")
    document_id: str
    document_title: str
    section: str
    chunk_id: str
    quote: str = Field(description="The span of the passage that backs the cited sentence.")


class Answer(BaseModel):
    text: str
    citations: list[Citation]
    model: str
