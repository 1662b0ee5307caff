"""Verifying a draft: sentences an analyst wrote, against a named section or retrieved passages.

With a document and a section ("gdpr", "Article 33"), a sentence is checked against that section's
chunks: the document's chunks the caller may read (the same access filter as a query, inside the
store), whose heading path has a heading starting with the section name. With a document only, or
with neither, it is checked against the passages retrieved for it (within that document). A
document the caller may not read behaves as one that does not exist.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from core.catalog import Catalog
from core.models import (
    Answer,
    AnswerSentence,
    Chunk,
    Principal,
    RetrievedChunk,
    SearchFilters,
    UnsupportedPolicy,
)
from generation.verification import CitationVerifier
from retrieval.embedder import Embedder, TextRole
from retrieval.filters import build_filter
from retrieval.retriever import Retriever
from retrieval.store import VectorStore

DRAFT_MODEL = "draft"


class DraftNotFoundError(LookupError):
    """The document (or the section in it) named by a draft sentence is not there for the caller."""


@dataclass(frozen=True)
class DraftSentence:
    text: str
    document_id: str | None = None
    section: str | None = None

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ValueError("a draft sentence needs its text")
        if self.section is not None and self.document_id is None:
            raise ValueError("a section needs its document_id")


@dataclass(frozen=True)
class DraftVerdict:
    sentence: AnswerSentence
    passages: list[RetrievedChunk]  # what it was checked against, numbered from 1


def in_section(chunk: Chunk, section: str) -> bool:
    """'Article 33 — Notification...' is in 'Article 33'; 'Article 330' is not."""
    wanted = section.strip().casefold()
    for heading in chunk.section.split(" > "):
        heading = heading.strip().casefold()
        if heading == wanted or (heading.startswith(wanted) and not heading[len(wanted)].isalnum()):
            return True
    return False


class DraftVerifier:
    """Finds each draft sentence's passages and verifies it against them (flagged, not dropped)."""

    def __init__(
        self,
        verifier: CitationVerifier,
        retriever: Retriever,
        store: VectorStore,
        embedder: Embedder,
        catalog: Catalog,
    ) -> None:
        # A draft's sentences are the analyst's: an unsupported one is reported, not removed.
        self.verifier = copy.copy(verifier)
        self.verifier.unsupported = UnsupportedPolicy.FLAG
        self.verifier.reattribute = True
        self.retriever = retriever
        self.store = store
        self.embedder = embedder
        self.catalog = catalog

    def run(self, sentences: list[DraftSentence], principal: Principal) -> list[DraftVerdict]:
        verdicts = []
        for draft in sentences:
            passages, cited = self.passages_for(draft, principal)
            item = AnswerSentence(text=draft.text.strip(), citations=cited)
            answer = Answer(text=item.text, citations=[], model=DRAFT_MODEL, sentences=[item])
            verified = self.verifier.run(answer, passages)
            verdicts.append(DraftVerdict(verified.sentences[0], passages))
        return verdicts

    def passages_for(
        self, draft: DraftSentence, principal: Principal
    ) -> tuple[list[RetrievedChunk], list[int]]:
        """The passages to check against, and those the sentence cites (the whole section)."""
        if draft.document_id is None:
            return self.retriever.run(draft.text, principal), []
        missing = DraftNotFoundError(f"no document {draft.document_id!r}")
        record = self.catalog.document(draft.document_id)
        if record is None:
            raise missing
        filters = SearchFilters(document_ids=[draft.document_id])
        if draft.section is None:
            passages = self.retriever.run(draft.text, principal, filters)
            if not passages:
                raise missing
            return passages, []
        # Every chunk of the document the caller may read, nearest first.
        readable = self.store.search(
            dense=self.embedder.embed_one(draft.text, TextRole.QUERY),
            sparse=None,
            limit=max(1, record.chunks),
            query_filter=build_filter(principal, filters),
        )
        if not readable:
            raise missing
        passages = [p for p in readable if in_section(p.chunk, draft.section)]
        if not passages:
            raise DraftNotFoundError(
                f"no section {draft.section!r} in document {draft.document_id!r}"
            )
        return passages, list(range(1, len(passages) + 1))
