"""Ingestion jobs: files in, chunks with dense and sparse vectors out, recorded in the SQL store."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from qdrant_client import models

from core.audit import AuditEvent, AuditLog
from core.catalog import (
    Catalog,
    DocumentRecord,
    DocumentStatus,
    Job,
    JobDocument,
    JobStatus,
    SuspectChunk,
    document_metadata,
)
from core.injection import QUARANTINE_REASON, InjectionPolicy, InjectionScreen
from core.models import Chunk, Document, DocumentFields
from core.sentence_vectors import SentenceVectors
from core.sentences import passage_sentences
from core.settings import Settings
from ingest.chunking import Chunker
from ingest.errors import IngestError
from ingest.manifest import MANIFEST_NAMES, Manifest, ManifestEntry
from ingest.parsers import SUPPORTED_SUFFIXES, content_hash, document_id_for, parse_document
from ingest.read_ahead import ReadAhead
from retrieval.embedder import Embedder, TextRole, check_same_embedder
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore

ProgressCallback = Callable[[JobDocument], None]
UPSERT_BATCH = 256  # chunks written to the store together: bounds the store's request size
RESUMABLE = frozenset({JobStatus.INTERRUPTED, JobStatus.FAILED})


class JobNotResumableError(ValueError):
    """The job is not one that stopped before its end."""


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
    sentences: list[str]  # its passages' quotable sentences, distinct, in order


@dataclass
class _Relabeled:
    """A file whose content is unchanged but whose manifest metadata changed."""

    position: int
    path: Path
    started: float
    known: DocumentRecord
    fields: DocumentFields
    changes: dict[str, dict[str, Any]]


@dataclass
class _Backfill:
    """An unchanged document stored before its sentences' vectors were (an upgraded index)."""

    position: int
    path: Path
    started: float
    outcome: JobDocument
    document_id: str
    sentences: list[str]


@dataclass
class _Claim:
    """A document id taken by a file of this job."""

    path: Path
    digest: str
    chunks: int


_Item = _Decided | _Parsed | _Relabeled | _Backfill


def _chunk_count(item: _Item) -> int:
    """What the item adds to its group's embedding work, in chunks (a sentence counts as one)."""
    if isinstance(item, _Parsed):
        return len(item.texts)
    return len(item.sentences) if isinstance(item, _Backfill) else 0


def _sentences_of(item: _Item) -> tuple[str, list[str]] | None:
    """The document id and quotable sentences of an item whose sentence vectors are due."""
    if isinstance(item, _Parsed):
        return item.document.document_id, item.sentences
    if isinstance(item, _Backfill):
        return item.document_id, item.sentences
    return None


def _quotable(chunks: Iterable[Chunk]) -> list[str]:
    """The chunks' quotable sentences, distinct, in order (what extractive answers compare)."""
    return list(dict.fromkeys(s for chunk in chunks for s in passage_sentences(chunk.text)))


def _changes(before: DocumentFields, after: DocumentFields) -> dict[str, dict[str, Any]]:
    """The fields that differ, as {"field": {"from": old, "to": new}} (JSON values)."""
    old, new = before.model_dump(mode="json"), after.model_dump(mode="json")
    return {
        name: {"from": old[name], "to": new[name]}
        for name in new
        if json.dumps(old[name], sort_keys=True) != json.dumps(new[name], sort_keys=True)
    }


class Ingestor:
    """Parses, chunks, embeds and stores documents, one job at a time.

    Unchanged documents (same content hash) are skipped; when only their manifest metadata
    changed (groups, title, jurisdiction, dates, type), it is written to their stored chunks in
    place, without re-embedding. A changed document's new chunks are written before its old
    version's chunks are removed: readers see the old version, then both for the moment between
    the two writes, then the new one; never neither.

    Document ids are unique within a job: a second file that would take an id already taken fails
    with a clear error; the same content twice is one document.

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
        sentence_vectors: SentenceVectors | None = None,
        embed_sentences: bool = True,
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
        self._sentence_vectors = sentence_vectors
        self._embed_sentences = embed_sentences

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: VectorStore,
        catalog: Catalog,
        embedder: Embedder,
        audit: AuditLog,
        watcher: ChangeWatcher | None = None,
        sentence_vectors: SentenceVectors | None = None,
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
            sentence_vectors,
            settings.sentence_vectors,
        )

    def create_job(
        self,
        sources: list[str],
        requested_by: str,
        paths: list[Path] | None = None,
        entries: list[ManifestEntry] | None = None,
        job_id: str | None = None,
    ) -> str:
        """Record a queued job (and audit it); `run` with its id works through it. `paths` are
        where the files are read from (default: the sources), `entries` the metadata given with
        them (kept, so that a resumed job uses it too)."""
        job_id = self._catalog.create_job(
            sources,
            requested_by,
            paths=[str(p) for p in paths] if paths is not None else None,
            entries=[e.model_dump(mode="json", exclude_none=True) for e in entries]
            if entries is not None
            else None,
            job_id=job_id,
        )
        self._audit.append(
            AuditEvent.JOB_CREATED, requested_by, target=job_id, detail={"sources": sources}
        )
        return job_id

    def recover(self) -> None:
        """Finish what a crash left half done: jobs of dead processes are marked interrupted, and
        metadata changes recorded but not yet in the chunks are written (rolled forward)."""
        for job_id in self._catalog.interrupt_abandoned_jobs():
            self._audit.append(
                AuditEvent.JOB_FINISHED,
                "recovery",
                target=job_id,
                detail={"status": JobStatus.INTERRUPTED.value},
            )
        for record, fields in self._catalog.pending_updates():
            self._store.update_document_fields(record.document_id, fields)
            self._catalog.finish_update(record.document_id)
            self._audit.append(
                AuditEvent.DOCUMENT_UPDATED,
                "recovery",
                target=record.document_id,
                detail={"changes": _changes(record.fields(), fields), "recovered": True},
            )

    def run(
        self,
        files: Iterable[Path],
        requested_by: str = "cli",
        metadata: dict[Path, ManifestEntry] | None = None,
        on_document: ProgressCallback | None = None,
        force: bool = False,
        job_id: str | None = None,
        rebuild: bool = False,
        stop: threading.Event | None = None,
    ) -> Job:
        """Ingest `files` as one job; metadata from `metadata`, else from each folder's manifest.

        `force` re-parses documents even when unchanged (reindex); `rebuild` says the job
        re-embeds every document, so it may switch the index to another embedder. One document's
        failure is recorded on its row and the job goes on. A file named twice counts once. When
        `stop` is set the job ends after the documents in hand, as interrupted (resumable).
        """
        files = list(files)
        if job_id is None:
            files = list(dict.fromkeys(files))
            job_id = self.create_job([str(f) for f in files], requested_by)
        self.recover()
        return self._work(
            job_id,
            list(enumerate(files)),
            metadata or {},
            requested_by,
            on_document,
            force=force,
            rebuild=rebuild,
            stop=stop,
        )

    def resume(
        self,
        job_id: str,
        requested_by: str = "cli",
        on_document: ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> Job:
        """Work through the documents an interrupted (or failed, or queued) job has left, under
        its id."""
        self.recover()
        job = self._catalog.job(job_id)
        if job is None:
            raise KeyError(job_id)
        if not self.resumable(job) and job.status is not JobStatus.QUEUED:
            raise JobNotResumableError(
                f"job {job_id} is {job.status.value}: only interrupted or failed jobs resume"
            )
        pending = self._catalog.pending_documents(job_id)
        metadata = {
            Path(p.path): ManifestEntry.model_validate(p.entry)
            for p in pending
            if p.entry is not None
        }
        self._audit.append(
            AuditEvent.JOB_RESUMED, requested_by, target=job_id, detail={"left": len(pending)}
        )
        claimed = {
            d.document_id: _Claim(Path(d.source), known.content_hash, known.chunks)
            for d in job.documents
            if d.document_id
            and d.status is not DocumentStatus.PENDING
            and d.status is not DocumentStatus.FAILED
            and (known := self._catalog.document(d.document_id)) is not None
        }
        return self._work(
            job_id,
            [(p.position, Path(p.path)) for p in pending],
            metadata,
            requested_by,
            on_document,
            stop=stop,
            claimed=claimed,
        )

    @staticmethod
    def resumable(job: Job) -> bool:
        return job.status in RESUMABLE

    def queue_resume(self, job_id: str) -> Job:
        """Mark a resumable job queued again, for `resume` on a worker thread."""
        return self._catalog.requeue_job(job_id)

    def _work(
        self,
        job_id: str,
        files: list[tuple[int, Path]],
        metadata: dict[Path, ManifestEntry],
        requested_by: str,
        on_document: ProgressCallback | None,
        *,
        force: bool = False,
        rebuild: bool = False,
        stop: threading.Event | None = None,
        claimed: dict[str, _Claim] | None = None,
    ) -> Job:
        self._store.ensure_collection(self._embedder.dimension)
        self._catalog.start_job(job_id)
        try:
            self._claim_index(rebuild)
            with ReadAhead(
                self._prepare(files, metadata, force, claimed or {}),
                size=_chunk_count,
                budget=self._embed_group_chunks,
                name="regulus-ingest-parse",
            ) as parsed:
                for group in parsed.groups():
                    if stop is not None and stop.is_set():
                        return self._interrupt(job_id, requested_by)
                    self._store_group(group, requested_by, job_id, on_document)
        except Exception as error:
            self._finish(job_id, requested_by, error=f"{type(error).__name__}: {error}")
            raise
        self._store.optimize()
        return self._finish(job_id, requested_by)

    def _prepare(
        self,
        files: list[tuple[int, Path]],
        metadata: dict[Path, ManifestEntry],
        force: bool,
        claimed: dict[str, _Claim],
    ) -> Iterator[_Item]:
        """Each file checked, parsed and chunked; runs in the read-ahead thread, writes nothing.

        `claimed` holds the document ids this job has taken so far (and by which file)."""
        manifests: dict[Path, Manifest] = {}
        for position, path in files:
            started = time.perf_counter()
            item: _Item
            try:
                entry = metadata.get(path)
                if entry is None:
                    if path.parent not in manifests:
                        manifests[path.parent] = Manifest.for_folder(path.parent)
                    entry = manifests[path.parent].for_file(path.name)
                item = self._parse_one(position, path, entry, force, started, claimed)
            except (IngestError, OSError) as error:
                item = _Decided(position, path, started, _failure(path, error))
            yield item

    def _store_group(
        self,
        group: list[_Item],
        requested_by: str,
        job_id: str,
        on_document: ProgressCallback | None,
    ) -> None:
        """Embed the group's chunks in one call, then write and record its documents in order."""
        # The embedder batches texts of equal length together: the wider its choice, the less
        # padding (the vectors take 1.5 KB a chunk).
        vectors = self._embedder.embed(
            [text for item in group if isinstance(item, _Parsed) for text in item.texts],
            TextRole.DOCUMENT,
        )
        new_sentences = self._new_sentence_vectors(group)
        offset = 0
        for item in group:
            if isinstance(item, _Parsed):
                own = vectors[offset : offset + len(item.texts)]
                offset += len(item.texts)
                try:
                    outcome = self._store_one(
                        item, own, new_sentences.get(item.position, {}), requested_by, job_id
                    )
                except (IngestError, OSError) as error:
                    outcome = _failure(item.path, error)
            elif isinstance(item, _Relabeled):
                outcome = self._relabel(item, requested_by, job_id)
            elif isinstance(item, _Backfill):
                self._save_sentence_vectors(item, new_sentences.get(item.position, {}))
                outcome = item.outcome
            else:
                outcome = item.outcome
            outcome.duration_ms = (time.perf_counter() - item.started) * 1000
            self._catalog.record_document(job_id, item.position, outcome)
            if on_document:
                on_document(outcome)

    def _new_sentence_vectors(self, group: list[_Item]) -> dict[int, dict[str, np.ndarray]]:
        """Per document due (parsed, or unchanged but without them), by position, the vectors of
        its sentences not stored yet, all embedded in one call (a changed document re-embeds only
        its changed sentences)."""
        if self._sentence_vectors is None or not self._embed_sentences:
            return {}
        signature = self._embedder.signature
        wanted = {
            item.position: self._sentence_vectors.missing(signature, *owned)
            for item in group
            if (owned := _sentences_of(item)) is not None
        }
        texts = list(dict.fromkeys(text for texts in wanted.values() for text in texts))
        vectors = dict(zip(texts, self._embedder.embed(texts, TextRole.DOCUMENT), strict=True))
        return {position: {t: vectors[t] for t in texts} for position, texts in wanted.items()}

    def _lacks_sentence_vectors(self, document_id: str) -> bool:
        return (
            self._sentence_vectors is not None
            and self._embed_sentences
            and not self._sentence_vectors.holds(self._embedder.signature, document_id)
        )

    def _save_sentence_vectors(self, item: _Item, vectors: dict[str, np.ndarray]) -> None:
        owned = _sentences_of(item)
        if self._sentence_vectors is not None and owned is not None:
            self._sentence_vectors.save(self._embedder.signature, owned[0], vectors)

    def _interrupt(self, job_id: str, requested_by: str) -> Job:
        job = self._catalog.interrupt_job(job_id, "stopped (shutdown)")
        self._audit.append(
            AuditEvent.JOB_FINISHED,
            requested_by,
            target=job_id,
            detail={"status": job.status.value, "counts": job.counts, "error": job.error},
        )
        return job

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
        self,
        position: int,
        path: Path,
        entry: ManifestEntry,
        force: bool,
        started: float,
        claimed: dict[str, _Claim],
    ) -> _Item:
        size = path.stat().st_size
        if size > self._max_file_bytes:
            raise IngestError(
                f"{path.name}: {size / 2**20:.1f} MB is over the {self._max_file_bytes / 2**20:.0f}"
                " MB limit (REGULUS_MAX_FILE_MB)"
            )
        document_id = entry.document_id or document_id_for(path)
        digest = content_hash(path)
        if (first := claimed.get(document_id)) is not None:
            if first.digest != digest:
                raise IngestError(
                    f"{path.name}: its document id {document_id!r} is already taken in this job "
                    f"by {first.path.name}; rename one of the files or give it a document_id "
                    "in the manifest"
                )
            return _Decided(position, path, started, _unchanged(path, document_id, first.chunks))
        known = self._catalog.document(document_id)
        if (
            not force
            and known is not None
            and known.content_hash == digest
            and self._store.has_document(document_id, digest)
        ):
            claimed[document_id] = _Claim(path, digest, known.chunks)
            fields = self._fields(document_id, entry, known)
            if changes := _changes(known.fields(), fields):
                return _Relabeled(position, path, started, known, fields, changes)
            unchanged = _unchanged(path, document_id, known.chunks)
            if self._lacks_sentence_vectors(document_id):
                sentences = _quotable(self._store.chunks(document_id))
                return _Backfill(position, path, started, unchanged, document_id, sentences)
            return _Decided(position, path, started, unchanged)
        document = parse_document(path, entry.model_copy(update={"document_id": document_id}))
        if not document.access_groups:
            document.access_groups = list(self._default_access_groups)
        chunks = self._chunker.run(document)
        suspects = self._screen_chunks(chunks)
        texts = [chunk.embedding_text() for chunk in chunks]
        sparse = [self._sparse_encoder.encode_document(text) for text in texts]
        sentences = _quotable(chunks)
        claimed[document_id] = _Claim(path, digest, len(chunks))
        return _Parsed(
            position, path, started, known, document, chunks, texts, sparse, suspects, sentences
        )

    def _fields(
        self, document_id: str, entry: ManifestEntry, known: DocumentRecord
    ) -> DocumentFields:
        """The document fields the manifest now gives an unchanged document, as parsing would.

        A title the manifest does not name stays the one recorded (it came from the document).
        """
        return DocumentFields.model_validate(
            entry.model_dump(exclude={"document_id", "title", "access_groups", "aliases"})
            | {
                "document_id": document_id,
                "document_title": entry.title or known.title,
                "access_groups": entry.access_groups or list(self._default_access_groups),
                "aliases": entry.aliases or [],
            }
        )

    def _relabel(self, item: _Relabeled, requested_by: str, job_id: str) -> JobDocument:
        """Intent in the catalog, then the chunks (one store operation), then the catalog row."""
        document_id = item.known.document_id
        self._catalog.begin_update(document_id, item.fields)
        self._store.update_document_fields(document_id, item.fields)
        self._catalog.finish_update(document_id)
        self._audit.append(
            AuditEvent.DOCUMENT_UPDATED,
            requested_by,
            target=document_id,
            detail={"job_id": job_id, "source": str(item.path), "changes": item.changes},
        )
        return JobDocument(
            source=str(item.path),
            document_id=document_id,
            status=DocumentStatus.UPDATED,
            chunks=item.known.chunks,
            error=None,
            duration_ms=None,
        )

    def _store_one(
        self,
        item: _Parsed,
        vectors: np.ndarray,
        sentence_vectors: dict[str, np.ndarray],
        requested_by: str,
        job_id: str,
    ) -> JobDocument:
        """Sentence vectors, then chunks, then the old version's leftovers go, then the catalog
        row (the commit point): a crash anywhere is redone by the next job, adding nothing twice.
        """
        document, chunks, known = item.document, item.chunks, item.known
        self._save_sentence_vectors(item, sentence_vectors)
        for start in range(0, len(chunks), UPSERT_BATCH):
            end = start + UPSERT_BATCH
            self._store.upsert(chunks[start:end], vectors[start:end], item.sparse[start:end])
        self._store.delete_other_versions(document.document_id, document.content_hash)
        if self._sentence_vectors is not None:
            self._sentence_vectors.keep_only(
                self._embedder.signature, document.document_id, item.sentences
            )
        self._catalog.save_document(
            DocumentRecord(
                document_id=document.document_id,
                title=document.document_title,
                source=str(item.path),
                content_hash=document.content_hash,
                chunks=len(chunks),
                access_groups=document.access_groups,
                metadata=document_metadata(document),
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
        if self._sentence_vectors is not None:
            self._sentence_vectors.delete_document(document_id)
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
        metadata = {Path(r.source): _reindex_entry(r) for r in records}
        return self.run(
            metadata,
            requested_by="reindex",
            metadata=metadata,
            on_document=on_document,
            force=True,
            rebuild=len(records) == len(self._catalog.documents()),
        )


def _reindex_entry(record: DocumentRecord) -> ManifestEntry:
    """The metadata a reindexed document keeps: its folder's manifest when there is one, else
    what the catalog holds (an uploaded file's folder has no manifest: its groups must stay)."""
    source = Path(record.source)
    if any((source.parent / name).is_file() for name in MANIFEST_NAMES):
        entry = Manifest.for_folder(source.parent).for_file(source.name)
    else:
        entry = ManifestEntry.model_validate(
            record.metadata | {"title": record.title, "access_groups": record.access_groups}
        )
    return entry.model_copy(update={"document_id": record.document_id})


def _unchanged(path: Path, document_id: str, chunks: int) -> JobDocument:
    return JobDocument(
        source=str(path),
        document_id=document_id,
        status=DocumentStatus.UNCHANGED,
        chunks=chunks,
        error=None,
        duration_ms=None,
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
