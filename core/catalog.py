"""What is ingested (documents) and how it got there (jobs), in the SQL store.

A document row is written only after all its chunks are in the vector store and its older
version's chunks are gone, so the row is the commit point: a job killed mid-document leaves no row
(or the old one), and a rerun ingests that document again. Chunk ids are deterministic, so the
rerun overwrites whatever the killed run wrote: no duplicates, no orphans.

A metadata change (same content, new manifest fields) is written ahead as the row's
`pending_update`, then to the chunks, then to the row: a crash in between leaves the intent, and
the next job (or server start) rolls it forward, so catalog and chunks end up agreeing.

A job records the process working on it (`worker`): a job left running or queued by a process
that is gone is marked interrupted at the next start, and can be resumed where it stopped.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import socket
import uuid
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, sessionmaker

from core.db import Base, UTCDateTime
from core.models import DocumentFields


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # its process stopped or died; resumable


class DocumentStatus(enum.StrEnum):
    PENDING = "pending"
    INGESTED = "ingested"
    UNCHANGED = "unchanged"
    UPDATED = "updated"  # same content, new metadata: written to its chunks without re-embedding
    FAILED = "failed"
    DELETED = "deleted"


class DocumentRow(Base):
    __tablename__ = "documents"

    document_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    chunks: Mapped[int] = mapped_column(Integer)
    access_groups: Mapped[list[str]] = mapped_column(JSON)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    ingested_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    # Metadata on its way to the chunks (written before them, cleared after): see the module doc.
    pending_update: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class JobRow(Base):
    __tablename__ = "ingest_jobs"

    job_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    status: Mapped[str] = mapped_column(String(32), default=JobStatus.QUEUED.value)
    requested_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=_now)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid:start of its process
    documents: Mapped[list[JobDocumentRow]] = relationship(
        order_by="JobDocumentRow.position", cascade="all, delete-orphan"
    )


class JobDocumentRow(Base):
    __tablename__ = "ingest_job_documents"

    job_id: Mapped[str] = mapped_column(ForeignKey("ingest_jobs.job_id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)  # where the file is read from (resume)
    # The metadata given with the file (uploads, --manifest), kept so that a resume uses it too.
    entry: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    document_id: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(32), default=DocumentStatus.PENDING.value)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    suspect_chunks: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, default=list)
    flagged_answers: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class IndexSettingRow(Base):
    """Facts about the whole index, such as which embedder produced its vectors."""

    __tablename__ = "index_settings"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


_EMBEDDER_KEY = "embedder"


class DocumentRecord(BaseModel):
    document_id: str
    title: str
    source: str
    content_hash: str
    chunks: int
    access_groups: list[str]
    metadata: dict[str, Any]
    ingested_at: dt.datetime

    def fields(self) -> DocumentFields:
        """The document-level fields its chunks carry, as the catalog knows them."""
        return DocumentFields.model_validate(
            self.metadata
            | {
                "document_id": self.document_id,
                "document_title": self.title,
                "access_groups": self.access_groups,
            }
        )

    @property
    def file_name(self) -> str:
        """The source's file name: what callers see (the path is the server's business)."""
        return PurePath(self.source).name


class SuspectChunk(BaseModel):
    """A chunk the prompt-injection screen flagged while ingesting it."""

    chunk_id: str
    section: str
    reasons: list[str]
    quarantined: bool = Field(description="Kept out of retrieval (REGULUS_INJECTION_POLICY).")


class JobDocument(BaseModel):
    source: str
    document_id: str | None
    status: DocumentStatus
    chunks: int
    error: str | None
    duration_ms: float | None
    suspect_chunks: list[SuspectChunk] = Field(default_factory=list)
    flagged_answers: int = Field(
        default=0, description="Saved answers citing it that this job marked needs_review."
    )


class Job(BaseModel):
    job_id: str
    status: JobStatus
    requested_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    error: str | None
    total: int
    done: int
    counts: dict[str, int]
    documents: list[JobDocument]
    flagged_answers: int = Field(
        default=0, description="Saved answers the job marked needs_review, all documents."
    )


class PendingDocument(BaseModel):
    """A document of a job not yet done: where to read it, and the metadata given with it."""

    position: int
    source: str
    path: str
    entry: dict[str, Any] | None


def new_job_id() -> str:
    return str(uuid.uuid4())


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is told apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def this_worker() -> str:
    """This process, as a job's `worker` names it."""
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid())}"


def worker_gone(worker: str | None) -> bool:
    """True when the process is known to be gone: on this host and dead (or its pid reused), or
    never recorded. A job of another host is never judged from here."""
    if worker is None:
        return True
    host, _, rest = worker.partition(":")
    pid_text, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    return bool(started) and _process_start(pid) not in ("", started)


def _job_view(row: JobRow) -> Job:
    documents = [
        JobDocument(
            source=d.source,
            document_id=d.document_id,
            status=DocumentStatus(d.status),
            chunks=d.chunks,
            error=d.error,
            duration_ms=d.duration_ms,
            suspect_chunks=[SuspectChunk.model_validate(s) for s in d.suspect_chunks or []],
            flagged_answers=d.flagged_answers,
        )
        for d in row.documents
    ]
    counts = {status.value: 0 for status in DocumentStatus}
    for document in documents:
        counts[document.status.value] += 1
    return Job(
        job_id=row.job_id,
        status=JobStatus(row.status),
        requested_by=row.requested_by,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=row.error,
        total=len(documents),
        done=len(documents) - counts[DocumentStatus.PENDING.value],
        counts=counts,
        documents=documents,
        flagged_answers=sum(document.flagged_answers for document in documents),
    )


class Catalog:
    """Document and job records; every method is one short transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    # documents

    def document(self, document_id: str) -> DocumentRecord | None:
        with self._sessions() as session:
            row = session.get(DocumentRow, document_id)
            return _document_view(row) if row else None

    def documents(self) -> list[DocumentRecord]:
        with self._sessions() as session:
            rows = session.scalars(select(DocumentRow).order_by(DocumentRow.document_id))
            return [_document_view(row) for row in rows]

    def save_document(self, record: DocumentRecord) -> None:
        with self._sessions.begin() as session:
            session.merge(
                DocumentRow(
                    document_id=record.document_id,
                    title=record.title,
                    source=record.source,
                    content_hash=record.content_hash,
                    chunks=record.chunks,
                    access_groups=record.access_groups,
                    metadata_=record.metadata,
                    ingested_at=record.ingested_at,
                    pending_update=None,
                )
            )

    def begin_update(self, document_id: str, fields: DocumentFields) -> None:
        """Record a metadata change before it is written to the chunks (see the module doc)."""
        with self._sessions.begin() as session:
            row = session.get_one(DocumentRow, document_id)
            row.pending_update = fields.model_dump(mode="json")

    def finish_update(self, document_id: str) -> DocumentRecord | None:
        """Apply the recorded change to the row once the chunks have it; returns the new record."""
        with self._sessions.begin() as session:
            row = session.get(DocumentRow, document_id)
            if row is None or row.pending_update is None:
                return None
            fields = DocumentFields.model_validate(row.pending_update)
            row.title = fields.document_title
            row.access_groups = fields.access_groups
            row.metadata_ = document_metadata(fields)
            row.pending_update = None
            return _document_view(row)

    def pending_updates(self) -> list[tuple[DocumentRecord, DocumentFields]]:
        """Metadata changes a crash left between the intent and the row."""
        with self._sessions() as session:
            rows = session.scalars(
                select(DocumentRow).where(DocumentRow.pending_update.is_not(None))
            )
            return [
                (_document_view(row), DocumentFields.model_validate(row.pending_update))
                for row in rows
            ]

    def forget_document(self, document_id: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(DocumentRow, document_id)
            if row:
                session.delete(row)

    # the index

    def index_embedder(self) -> str | None:
        """The model and backend that embedded the stored chunks (unset before the first job)."""
        with self._sessions() as session:
            row = session.get(IndexSettingRow, _EMBEDDER_KEY)
            return row.value if row else None

    def set_index_embedder(self, signature: str) -> None:
        with self._sessions.begin() as session:
            session.merge(IndexSettingRow(key=_EMBEDDER_KEY, value=signature))

    # jobs

    def create_job(
        self,
        sources: list[str],
        requested_by: str,
        paths: list[str] | None = None,
        entries: list[dict[str, Any] | None] | None = None,
        job_id: str | None = None,
    ) -> str:
        """A queued job of these documents: shown by `sources`, read from `paths` (default: the
        sources), with the metadata `entries` given for them (default: their folder manifests)."""
        job_id = job_id or new_job_id()
        paths = paths or sources
        entries = entries or [None] * len(sources)
        if not len(paths) == len(entries) == len(sources):
            raise ValueError("one path and one entry per source")
        with self._sessions.begin() as session:
            session.add(
                JobRow(
                    job_id=job_id,
                    requested_by=requested_by,
                    worker=this_worker(),
                    documents=[
                        JobDocumentRow(position=n, source=source, path=path, entry=entry)
                        for n, (source, path, entry) in enumerate(
                            zip(sources, paths, entries, strict=True)
                        )
                    ],
                )
            )
        return job_id

    def start_job(self, job_id: str) -> None:
        with self._sessions.begin() as session:
            row = session.get_one(JobRow, job_id)
            row.status, row.worker, row.error = JobStatus.RUNNING.value, this_worker(), None
            row.started_at = row.started_at or _now()

    def requeue_job(self, job_id: str) -> Job:
        with self._sessions.begin() as session:
            row = session.get_one(JobRow, job_id)
            row.status, row.worker, row.error = JobStatus.QUEUED.value, this_worker(), None
            row.finished_at = None
            return _job_view(row)

    def pending_documents(self, job_id: str) -> list[PendingDocument]:
        with self._sessions() as session:
            row = session.get_one(JobRow, job_id)
            return [
                PendingDocument(
                    position=d.position, source=d.source, path=d.path or d.source, entry=d.entry
                )
                for d in row.documents
                if d.status == DocumentStatus.PENDING.value
            ]

    def interrupt_job(self, job_id: str, reason: str) -> Job:
        """Mark a job that stopped before its end; it says how many documents are left."""
        with self._sessions.begin() as session:
            row = session.get_one(JobRow, job_id)
            _interrupt(row, reason)
            return _job_view(row)

    def interrupt_abandoned_jobs(self) -> list[str]:
        """Jobs left running or queued by a process that is gone, marked interrupted."""
        unfinished = (JobStatus.RUNNING.value, JobStatus.QUEUED.value)
        with self._sessions.begin() as session:
            rows = session.scalars(select(JobRow).where(JobRow.status.in_(unfinished))).all()
            abandoned = [row for row in rows if worker_gone(row.worker)]
            for row in abandoned:
                _interrupt(row, "its process stopped before the end")
            return [row.job_id for row in abandoned]

    def record_document(self, job_id: str, position: int, outcome: JobDocument) -> None:
        with self._sessions.begin() as session:
            row = session.get_one(JobDocumentRow, (job_id, position))
            row.document_id = outcome.document_id
            row.status = outcome.status.value
            row.chunks = outcome.chunks
            row.error = outcome.error
            row.duration_ms = outcome.duration_ms
            row.suspect_chunks = [s.model_dump() for s in outcome.suspect_chunks]
            row.flagged_answers = outcome.flagged_answers

    def finish_job(self, job_id: str, error: str | None = None) -> Job:
        with self._sessions.begin() as session:
            row = session.get_one(JobRow, job_id)
            failed = sum(d.status == DocumentStatus.FAILED.value for d in row.documents)
            if error:
                row.status = JobStatus.FAILED.value
            elif failed:
                row.status = JobStatus.COMPLETED_WITH_ERRORS.value
            else:
                row.status = JobStatus.SUCCEEDED.value
            row.error, row.finished_at = error, _now()
            return _job_view(row)

    def job(self, job_id: str) -> Job | None:
        with self._sessions() as session:
            row = session.get(JobRow, job_id)
            return _job_view(row) if row else None

    def jobs(self, limit: int = 20, offset: int = 0) -> list[Job]:
        with self._sessions() as session:
            rows = session.scalars(
                select(JobRow).order_by(JobRow.created_at.desc()).limit(limit).offset(offset)
            )
            return [_job_view(row) for row in rows]

    def count_jobs(self) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(JobRow)) or 0

    def job_counts(self) -> dict[str, int]:
        """How many jobs are in each status."""
        with self._sessions() as session:
            rows = session.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            return {status: count for status, count in rows.tuples()}

    def count_documents(self) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(DocumentRow)) or 0


def _interrupt(row: JobRow, reason: str) -> None:
    left = sum(d.status == DocumentStatus.PENDING.value for d in row.documents)
    row.status, row.finished_at = JobStatus.INTERRUPTED.value, _now()
    row.error = (
        f"interrupted: {reason}; {left} of {len(row.documents)} documents left (resume it: "
        f"POST /v1/ingest/jobs/{row.job_id}/resume, or ingest the files again)"
    )


METADATA_FIELDS = frozenset(
    {"jurisdiction", "regulator", "document_type", "effective_date", "version", "aliases"}
)


def document_metadata(fields: DocumentFields) -> dict[str, Any]:
    """The record's `metadata`: the document fields beside its title and groups."""
    return fields.model_dump(mode="json", include=set(METADATA_FIELDS))


def _document_view(row: DocumentRow) -> DocumentRecord:
    return DocumentRecord(
        document_id=row.document_id,
        title=row.title,
        source=row.source,
        content_hash=row.content_hash,
        chunks=row.chunks,
        access_groups=row.access_groups,
        metadata=row.metadata_,
        ingested_at=row.ingested_at,
    )
