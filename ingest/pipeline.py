"""Ingestion job: files in, chunks with vectors out, idempotent by content hash."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from core.settings import Settings
from ingest.chunking import Chunker
from ingest.errors import IngestError
from ingest.parsers import (
    MANIFEST_NAME,
    SUPPORTED_SUFFIXES,
    content_hash,
    document_id_for,
    parse_document,
    read_manifest,
)
from retrieval.embedder import Embedder
from retrieval.store import VectorStore


class DocumentStatus(enum.StrEnum):
    INGESTED = "ingested"
    UNCHANGED = "unchanged"
    FAILED = "failed"


class DocumentOutcome(BaseModel):
    source: str
    document_id: str
    status: DocumentStatus
    chunks: int = 0
    error: str | None = None


class IngestReport(BaseModel):
    documents: list[DocumentOutcome]

    def count(self, status: DocumentStatus) -> int:
        return sum(outcome.status is status for outcome in self.documents)


ProgressCallback = Callable[[DocumentOutcome], None]


def discover_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The given files, and the supported files under the given folders, in a stable order."""
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if (
                    child.is_file()
                    and child.suffix.lower() in SUPPORTED_SUFFIXES
                    and child.name != MANIFEST_NAME
                ):
                    yield child
        else:
            yield path


class Ingestor:
    """Parses, chunks, embeds and stores documents; unchanged documents are skipped.

    A changed document's new chunks are written before its old version's chunks are removed, so
    readers see the old version, then briefly both, then the new one; never neither.
    """

    def __init__(self, store: VectorStore, embedder: Embedder, chunker: Chunker) -> None:
        self._store = store
        self._embedder = embedder
        self._chunker = chunker

    @classmethod
    def from_settings(cls, settings: Settings, store: VectorStore, embedder: Embedder) -> Ingestor:
        special_tokens = 2  # the model's [CLS] and [SEP] count against what it reads
        chunk_tokens = min(settings.chunk_tokens, embedder.max_tokens - special_tokens)
        chunker = Chunker(chunk_tokens, settings.chunk_overlap, tokenizer=embedder.tokenize)
        return cls(store, embedder, chunker)

    def run(
        self, files: Iterable[Path], on_document: ProgressCallback | None = None
    ) -> IngestReport:
        self._store.ensure_collection(self._embedder.dimension)
        manifests: dict[Path, dict[str, dict[str, object]]] = {}
        outcomes = []
        for path in files:
            folder = path.parent
            try:
                if folder not in manifests:
                    manifests[folder] = read_manifest(folder)
                outcome = self._ingest_one(path, manifests[folder].get(path.name, {}))
            except (IngestError, OSError) as error:
                outcome = DocumentOutcome(
                    source=str(path),
                    document_id=document_id_for(path),
                    status=DocumentStatus.FAILED,
                    error=str(error),
                )
            outcomes.append(outcome)
            if on_document:
                on_document(outcome)
        return IngestReport(documents=outcomes)

    def _ingest_one(self, path: Path, metadata: dict[str, object]) -> DocumentOutcome:
        document_id = str(metadata.get("document_id") or document_id_for(path))
        if self._store.has_document(document_id, content_hash(path)):
            return DocumentOutcome(
                source=str(path), document_id=document_id, status=DocumentStatus.UNCHANGED
            )
        document = parse_document(path, metadata)
        chunks = self._chunker.run(document)
        vectors = self._embedder.embed([chunk.embedding_text() for chunk in chunks])
        self._store.upsert(chunks, vectors)
        self._store.delete_other_versions(document.document_id, document.content_hash)
        return DocumentOutcome(
            source=str(path),
            document_id=document.document_id,
            status=DocumentStatus.INGESTED,
            chunks=len(chunks),
        )
