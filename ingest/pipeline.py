"""Ingestion jobs: files in, chunks with dense and sparse vectors out, recorded in the SQL store."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from qdrant_client import models

from core.audit import AuditEvent, AuditLog
from core.catalog import Catalog, DocumentRecord, DocumentStatus, Job, JobDocument, SuspectChunk
from core.injection import QUARANTINE_REASON, InjectionPolicy, InjectionScreen
from core.models import Chunk, Document
from core.settings import Settings
from ingest.chunking import Chunker
from ingest.errors import IngestError
from ingest.manifest import MANIFEST_NAMES, Manifest, ManifestEntry
from ingest.parsers import SUPPORTED_SUFFIXES, content_hash, document_id_for, parse_document
from ingest.read_ahead import ReadAhead
from retrieval.embedder import Embedder, check_same_embedder
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore

ProgressCallback = Callable[[JobDocument], None]
UPSERT_BATCH = 256  # chunks written to the store together: bounds the store's request size


class ChangeWatcher(Protocol):
    """Told of every document a job stores or deletes, so that what cites it is re-checked
    (saved answers: `core.saved.SavedAnswers`)."""

    def document_changed(
        self, document_id: str, content_hash: str | None, chunks: Sequence[Chunk]
    ) -> list[str]:
        """The document's version now (None, no chunks: deleted); returns what it flagged."""
        ...


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


@dataclass
class _Decided:
    """A file settled without embedding: unchanged, or failed before its chunks were ready."""

    position: int
    path: Path
    started: float
    outcome: JobDocument


@dataclass
class _Parsed:
    """A file parsed, chunked and sparse-encoded, waiting for its dense vectors."""

    position: int
    path: Path
    started: float
    known: DocumentRecord | None
    document: Document
    chunks: list[Chunk]
    texts: list[str]
    sparse: list[models.SparseVector]
    suspects: list[SuspectChunk]


def _chunk_count(item: _Decided | _Parsed) -> int:
    return len(item.texts) if isinstance(item, _Parsed) else 0


class Ingestor:
    """Parses, chunks, embeds and stores documents, one job at a time.

    Unchanged documents (same content hash) are skipped. A changed document's new chunks are
    written before its old version's chunks are removed: readers see the old version, then both
    for the moment between the two writes, then the new one; never neither.

    A worker thread reads, parses and chunks the next documents (up to `embed_group_chunks`
    chunks ahead) while this thread embeds everything it has ready in one call, then writes
    the documents to the store and the catalog one by one, in order.
    """

    def __init__(
        self,
        store: VectorStore,
        catalog: Catalog,
        embedder: Embedder,
        sparse_encoder: BM25Encoder,
        chunker: Chunker,
        default_access_groups: list[str],
        max_file_bytes: int,
        audit: AuditLog,
        embed_group_chunks: int,
        injection_screen: InjectionScreen | None = None,
        injection_policy: InjectionPolicy = InjectionPolicy.QUARANTINE,
        watcher: ChangeWatcher | None = None,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
        if embed_group_chunks < 1:
            raise ValueError("embed_group_chunks must be at least 1")
        self._embed_group_chunks = embed_group_chunks
        self._screen = injection_screen
        self._injection_policy = InjectionPolicy(injection_policy)
        self._store = store
        self._catalog = catalog
        self._embedder = embedder
        self._sparse_encoder = sparse_encoder
        self._chunker = chunker
        self._default_access_groups = default_access_groups
        self._max_file_bytes = max_file_bytes
        self._audit = audit
        self._watcher = watcher

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: VectorStore,
        catalog: Catalog,
        embedder: Embedder,
        audit: AuditLog,
        watcher: ChangeWatcher | None = None,
    ) -> Ingestor:
        special_tokens = 2  # the model's [CLS] and [SEP] count against what it reads
        chunk_tokens = min(settings.chunk_tokens, embedder.max_tokens - special_tokens)
        chunker = Chunker(chunk_tokens, settings.chunk_overlap, tokenizer=embedder.tokenize)
        sparse_encoder = BM25Encoder(
            settings.bm25_k1, settings.bm25_b, settings.bm25_average_length
        )
        return cls(
            store,
            catalog,
            embedder,
            sparse_encoder,
            chunker,
            settings.default_access_groups,
            int(settings.max_file_mb * 1024 * 1024),
            audit,
            settings.embed_group_chunks,
            InjectionScreen(settings.injection_threshold),
            settings.injection_policy,
            watcher,
        )

    def create_job(self, sources: list[str], requested_by: str) -> str:
        """Record a queued job (and audit it); `run` with its id works through it."""
        job_id = self._catalog.create_job(sources, requested_by)
        self._audit.append(
            AuditEvent.JOB_CREATED, requested_by, target=job_id, detail={"sources": sources}
        )
        return job_id

    def run(
        self,
        files: Iterable[Path],
        requested_by: str = "cli",
        metadata: dict[Path, ManifestEntry] | None = None,
        on_document: ProgressCallback | None = None,
        force: bool = False,
        job_id: str | None = None,
        rebuild: bool = False,
    ) -> Job:
        """Ingest `files` as one job; metadata from `metadata`, else from each folder's manifest.

        `force` re-parses documents even when unchanged (reindex); `rebuild` says the job
        re-embeds every document, so it may switch the index to another embedder. One document's
        failure is recorded on its row and the job goes on.
        """
        files = list(files)
        job_id = job_id or self.create_job([str(f) for f in files], requested_by)
        self._store.ensure_collection(self._embedder.dimension)
        self._catalog.start_job(job_id)
        try:
            self._claim_index(rebuild)
            with ReadAhead(
                self._prepare(files, metadata or {}, force),
                size=_chunk_count,
                budget=self._embed_group_chunks,
                name="regulus-ingest-parse",
            ) as parsed:
                for group in parsed.groups():
                    self._store_group(group, requested_by, job_id, on_document)
        except Exception as error:
            self._finish(job_id, requested_by, error=f"{type(error).__name__}: {error}")
            raise
        self._store.optimize()
        return self._finish(job_id, requested_by)

    def _prepare(
        self, files: list[Path], metadata: dict[Path, ManifestEntry], force: bool
    ) -> Iterator[_Decided | _Parsed]:
        """Each file checked, parsed and chunked; runs in the read-ahead thread, writes nothing."""
        manifests: dict[Path, Manifest] = {}
        for position, path in enumerate(files):
            started = time.perf_counter()
            item: _Decided | _Parsed
            try:
                entry = metadata.get(path)
                if entry is None:
                    if path.parent not in manifests:
                        manifests[path.parent] = Manifest.for_folder(path.parent)
                    entry = manifests[path.parent].for_file(path.name)
                item = self._parse_one(position, path, entry, force, started)
            except (IngestError, OSError) as error:
                item = _Decided(position, path, started, _failure(path, error))
            yield item

    def _store_group(
        self,
        group: list[_Decided | _Parsed],
        requested_by: str,
        job_id: str,
        on_document: ProgressCallback | None,
    ) -> None:
        """Embed the group's chunks in one call, then write and record its documents in order."""
        # The embedder batches texts of equal length together: the wider its choice, the less
        # padding (the vectors take 1.5 KB a chunk).
        vectors = self._embedder.embed(
            [text for item in group if isinstance(item, _Parsed) for text in item.texts]
        )
        offset = 0
        for item in group:
            if isinstance(item, _Parsed):
                own = vectors[offset : offset + len(item.texts)]
                offset += len(item.texts)
                try:
                    outcome = self._store_one(item, own, requested_by, job_id)
                except (IngestError, OSError) as error:
                    outcome = _failure(item.path, error)
            else:
                outcome = item.outcome
            outcome.duration_ms = (time.perf_counter() - item.started) * 1000
            self._catalog.record_document(job_id, item.position, outcome)
            if on_document:
                on_document(outcome)

    def _finish(self, job_id: str, requested_by: str, error: str | None = None) -> Job:
        job = self._catalog.finish_job(job_id, error=error)
        self._audit.append(
            AuditEvent.JOB_FINISHED,
            requested_by,
            target=job_id,
            detail={"status": job.status.value, "counts": job.counts, "error": error},
        )
        return job

    def _claim_index(self, rebuild: bool) -> None:
        """Refuse to mix vectors of two embedders in one index (queries would compare them).

        A rebuild switches the index to the configured embedder at its start: until it finishes,
        documents not yet re-embedded still hold the old vectors.
        """
        recorded = self._catalog.index_embedder()
        current = self._embedder.signature
        if recorded == current:
            return
        if not rebuild and self._catalog.documents():
            check_same_embedder(recorded, current)
        self._catalog.set_index_embedder(current)

    def _parse_one(
        self, position: int, path: Path, entry: ManifestEntry, force: bool, started: float
    ) -> _Decided | _Parsed:
        size = path.stat().st_size
        if size > self._max_file_bytes:
            raise IngestError(
                f"{path.name}: {size / 2**20:.1f} MB is over the {self._max_file_bytes / 2**20:.0f}"
                " MB limit (REGULUS_MAX_FILE_MB)"
            )
        document_id = entry.document_id or document_id_for(path)
        digest = content_hash(path)
        known = self._catalog.document(document_id)
        if (
            not force
            and known is not None
            and known.content_hash == digest
            and self._store.has_document(document_id, digest)
        ):
            unchanged = JobDocument(
                source=str(path),
                document_id=document_id,
                status=DocumentStatus.UNCHANGED,
                chunks=known.chunks,
                error=None,
                duration_ms=None,
            )
            return _Decided(position, path, started, unchanged)
        document = parse_document(path, entry.model_copy(update={"document_id": document_id}))
        if not document.access_groups:
            document.access_groups = list(self._default_access_groups)
        chunks = self._chunker.run(document)
        suspects = self._screen_chunks(chunks)
        texts = [chunk.embedding_text() for chunk in chunks]
        sparse = [self._sparse_encoder.encode_document(text) for text in texts]
        return _Parsed(position, path, started, known, document, chunks, texts, sparse, suspects)

    def _store_one(
        self, item: _Parsed, vectors: np.ndarray, requested_by: str, job_id: str
    ) -> JobDocument:
        document, chunks, known = item.document, item.chunks, item.known
        for start in range(0, len(chunks), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            self._store.upsert(chunks[start:end], vectors[start:end], item.sparse[start:end])
        self._store.delete_other_versions(document.document_id, document.content_hash)
        self._catalog.save_document(
            DocumentRecord(
                document_id=document.document_id,
                title=document.document_title,
                source=str(item.path),
                content_hash=document.content_hash,
                chunks=len(chunks),
                access_groups=document.access_groups,
                metadata=document.model_dump(
                    mode="json",
                    include={
                        "jurisdiction",
                        "regulator",
                        "document_type",
                        "effective_date",
                        "version",
                    },
                ),
                ingested_at=dt.datetime.now(dt.UTC),
            )
        )
        flagged = self._changed(document.document_id, document.content_hash, chunks)
        self._audit.append(
            AuditEvent.DOCUMENT_REPLACED if known else AuditEvent.DOCUMENT_ADDED,
            requested_by,
            target=document.document_id,
            detail={
                "job_id": job_id,
                "source": str(item.path),
                "content_hash": document.content_hash,
                "previous_hash": known.content_hash if known else None,
                "chunks": len(chunks),
                "access_groups": document.access_groups,
                "flagged_answers": flagged,
            },
        )
        return JobDocument(
            source=str(item.path),
            document_id=document.document_id,
            status=DocumentStatus.INGESTED,
            chunks=len(chunks),
            error=None,
            duration_ms=None,
            suspect_chunks=item.suspects,
            flagged_answers=len(flagged),
        )

    def _changed(
        self, document_id: str, content_hash: str | None, chunks: list[Chunk]
    ) -> list[str]:
        """What the watcher flagged on this change (inside the job, after the catalog row)."""
        if self._watcher is None:
            return []
        return self._watcher.document_changed(document_id, content_hash, chunks)

    def _screen_chunks(self, chunks: list[Chunk]) -> list[SuspectChunk]:
        """Mark chunks that read as instructions to the model; quarantine them by policy."""
        if self._screen is None:
            return []
        quarantine = self._injection_policy is InjectionPolicy.QUARANTINE
        suspects = []
        for chunk in chunks:
            screening = self._screen.run(chunk.embedding_text())  # headings reach the model too
            if not screening.suspect:
                continue
            chunk.injection_suspect = True
            chunk.injection_reasons = screening.reasons
            chunk.quarantine = QUARANTINE_REASON if quarantine else None
            suspects.append(
                SuspectChunk(
                    chunk_id=chunk.chunk_id,
                    section=chunk.section,
                    reasons=screening.reasons,
                    quarantined=quarantine,
                )
            )
        return suspects

    def delete(self, document_id: str, actor: str = "cli") -> bool:
        """Remove a document's chunks and record; False when it was not there."""
        known = self._catalog.document(document_id)
        removed = self._store.delete_document(document_id)
        self._catalog.forget_document(document_id)
        deleted = known is not None or removed > 0
        if deleted:
            flagged = self._changed(document_id, None, [])
            self._audit.append(
                AuditEvent.DOCUMENT_DELETED,
                actor,
                target=document_id,
                detail={
                    "chunks": removed,
                    "content_hash": known.content_hash if known else None,
                    "flagged_answers": flagged,
                },
            )
        return deleted

    def prune(self, folder: Path) -> list[str]:
        """Delete the documents ingested from under `folder` whose files are gone."""
        root = folder.resolve()
        gone = [
            record.document_id
            for record in self._catalog.documents()
            if Path(record.source).resolve().is_relative_to(root)
            and not Path(record.source).exists()
        ]
        for document_id in gone:
            self.delete(document_id, actor="prune")
        return gone

    def reindex(
        self, document_ids: list[str] | None = None, on_document: ProgressCallback | None = None
    ) -> Job:
        """Re-parse documents from their recorded sources in place, keeping their ids."""
        records = [
            r
            for r in self._catalog.documents()
            if document_ids is None or r.document_id in document_ids
        ]
        metadata = {
            Path(r.source): Manifest.for_folder(Path(r.source).parent)
            .for_file(Path(r.source).name)
            .model_copy(update={"document_id": r.document_id})
            for r in records
        }
        return self.run(
            metadata,
            requested_by="reindex",
            metadata=metadata,
            on_document=on_document,
            force=True,
            rebuild=len(records) == len(self._catalog.documents()),
        )


def _failure(path: Path, error: Exception) -> JobDocument:
    return JobDocument(
        source=str(path),
        document_id=document_id_for(path),
        status=DocumentStatus.FAILED,
        chunks=0,
        error=_describe(path, error),
        duration_ms=None,
    )


def _describe(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{path.name}: the file disappeared before it could be read"
    if isinstance(error, IngestError):
        return str(error)
    return f"{path.name}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
