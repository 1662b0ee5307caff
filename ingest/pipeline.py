"""Ingestion jobs: files in, chunks with dense and sparse vectors out, recorded in the SQL store."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from core.audit import AuditEvent, AuditLog
from core.injection import QUARANTINE_REASON, InjectionPolicy, InjectionScreen
from core.models import Chunk
from core.settings import Settings
from ingest.catalog import (
    Catalog,
    DocumentRecord,
    DocumentStatus,
    Job,
    JobDocument,
    SuspectChunk,
)
from ingest.chunking import Chunker
from ingest.errors import IngestError
from ingest.manifest import MANIFEST_NAMES, Manifest, ManifestEntry
from ingest.parsers import SUPPORTED_SUFFIXES, content_hash, document_id_for, parse_document
from retrieval.embedder import Embedder, check_same_embedder
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore

ProgressCallback = Callable[[JobDocument], None]
UPSERT_BATCH = 256  # chunks written to the store together: bounds the store's request size


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
    """Parses, chunks, embeds and stores documents, one job at a time.

    Unchanged documents (same content hash) are skipped. A changed document's new chunks are
    written before its old version's chunks are removed: readers see the old version, then both
    for the moment between the two writes, then the new one; never neither.
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
        injection_screen: InjectionScreen | None = None,
        injection_policy: InjectionPolicy = InjectionPolicy.QUARANTINE,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be positive")
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

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: VectorStore,
        catalog: Catalog,
        embedder: Embedder,
        audit: AuditLog,
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
            InjectionScreen(settings.injection_threshold),
            settings.injection_policy,
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
        manifests: dict[Path, Manifest] = {}
        try:
            self._claim_index(rebuild)
            for position, path in enumerate(files):
                started = time.perf_counter()
                try:
                    entry = (metadata or {}).get(path)
                    if entry is None:
                        if path.parent not in manifests:
                            manifests[path.parent] = Manifest.for_folder(path.parent)
                        entry = manifests[path.parent].for_file(path.name)
                    outcome = self._ingest_one(path, entry, force, requested_by, job_id)
                except (IngestError, OSError) as error:
                    outcome = JobDocument(
                        source=str(path),
                        document_id=document_id_for(path),
                        status=DocumentStatus.FAILED,
                        chunks=0,
                        error=_describe(path, error),
                        duration_ms=None,
                    )
                outcome.duration_ms = (time.perf_counter() - started) * 1000
                self._catalog.record_document(job_id, position, outcome)
                if on_document:
                    on_document(outcome)
        except Exception as error:
            self._finish(job_id, requested_by, error=f"{type(error).__name__}: {error}")
            raise
        self._store.optimize()
        return self._finish(job_id, requested_by)

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

    def _ingest_one(
        self, path: Path, entry: ManifestEntry, force: bool, requested_by: str, job_id: str
    ) -> JobDocument:
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
            return JobDocument(
                source=str(path),
                document_id=document_id,
                status=DocumentStatus.UNCHANGED,
                chunks=known.chunks,
                error=None,
                duration_ms=None,
            )
        document = parse_document(path, entry.model_copy(update={"document_id": document_id}))
        if not document.access_groups:
            document.access_groups = list(self._default_access_groups)
        chunks = self._chunker.run(document)
        suspects = self._screen_chunks(chunks)
        texts = [chunk.embedding_text() for chunk in chunks]
        # The whole document in one call: the embedder batches texts of equal length together, and
        # the wider its choice the less padding (the vectors take 1.5 KB a chunk).
        vectors = self._embedder.embed(texts)
        for start in range(0, len(chunks), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            sparse = [self._sparse_encoder.encode_document(text) for text in texts[start:end]]
            self._store.upsert(chunks[start:end], vectors[start:end], sparse)
        self._store.delete_other_versions(document.document_id, document.content_hash)
        self._catalog.save_document(
            DocumentRecord(
                document_id=document.document_id,
                title=document.document_title,
                source=str(path),
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
        self._audit.append(
            AuditEvent.DOCUMENT_REPLACED if known else AuditEvent.DOCUMENT_ADDED,
            requested_by,
            target=document.document_id,
            detail={
                "job_id": job_id,
                "source": str(path),
                "content_hash": document.content_hash,
                "previous_hash": known.content_hash if known else None,
                "chunks": len(chunks),
                "access_groups": document.access_groups,
            },
        )
        return JobDocument(
            source=str(path),
            document_id=document.document_id,
            status=DocumentStatus.INGESTED,
            chunks=len(chunks),
            error=None,
            duration_ms=None,
            suspect_chunks=suspects,
        )

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
            self._audit.append(
                AuditEvent.DOCUMENT_DELETED,
                actor,
                target=document_id,
                detail={"chunks": removed, "content_hash": known.content_hash if known else None},
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


def _describe(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{path.name}: the file disappeared before it could be read"
    if isinstance(error, IngestError):
        return str(error)
    return f"{path.name}: {error.strerror or error}" if isinstance(error, OSError) else str(error)
