"""Ingestion job: files in, chunks with vectors out, idempotent by content hash."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel

from core.settings import Settings
from ingest.chunking import Chunker
from ingest.errors import IngestError
from ingest.manifest import MANIFEST_NAMES, Manifest, ManifestEntry
from ingest.parsers import SUPPORTED_SUFFIXES, content_hash, document_id_for, parse_document
from retrieval.embedder import Embedder
from retrieval.sparse import BM25Encoder
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
                    and child.name not in MANIFEST_NAMES
                ):
                    yield child
        else:
            yield path


class Ingestor:
    """Parses, chunks, embeds and stores documents; unchanged documents are skipped.

    A changed document's new chunks are written before its old version's chunks are removed, so
    readers see the old version, then briefly both, then the new one; never neither.
    """

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse_encoder: BM25Encoder,
        chunker: Chunker,
        default_access_groups: list[str],
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._sparse_encoder = sparse_encoder
        self._chunker = chunker
        self._default_access_groups = default_access_groups

    @classmethod
    def from_settings(cls, settings: Settings, store: VectorStore, embedder: Embedder) -> Ingestor:
        special_tokens = 2  # the model's [CLS] and [SEP] count against what it reads
        chunk_tokens = min(settings.chunk_tokens, embedder.max_tokens - special_tokens)
        chunker = Chunker(chunk_tokens, settings.chunk_overlap, tokenizer=embedder.tokenize)
        sparse_encoder = BM25Encoder(
            settings.bm25_k1, settings.bm25_b, settings.bm25_average_length
        )
        return cls(store, embedder, sparse_encoder, chunker, settings.default_access_groups)

    def run(
        self,
        files: Iterable[Path],
        on_document: ProgressCallback | None = None,
        manifest: Manifest | None = None,
    ) -> IngestReport:
        """Ingest `files`; metadata comes from `manifest`, else from each file's folder manifest."""
        self._store.ensure_collection(self._embedder.dimension)
        manifests: dict[Path, Manifest] = {}
        outcomes = []
        for path in files:
            try:
                if manifest is None and path.parent not in manifests:
                    manifests[path.parent] = Manifest.for_folder(path.parent)
                entry = (manifest or manifests[path.parent]).for_file(path.name)
                outcome = self._ingest_one(path, entry)
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

    def _ingest_one(self, path: Path, metadata: ManifestEntry) -> DocumentOutcome:
        document_id = metadata.document_id or document_id_for(path)
        if self._store.has_document(document_id, content_hash(path)):
            return DocumentOutcome(
                source=str(path), document_id=document_id, status=DocumentStatus.UNCHANGED
            )
        document = parse_document(path, metadata)
        if not document.access_groups:
            document.access_groups = list(self._default_access_groups)
        chunks = self._chunker.run(document)
        texts = [chunk.embedding_text() for chunk in chunks]
        dense = self._embedder.embed(texts)
        sparse = [self._sparse_encoder.encode_document(text) for text in texts]
        self._store.upsert(chunks, dense, sparse)
        self._store.delete_other_versions(document.document_id, document.content_hash)
        return DocumentOutcome(
            source=str(path),
            document_id=document.document_id,
            status=DocumentStatus.INGESTED,
            chunks=len(chunks),
        )
