"""The SQL store on both backends: SQLite (embedded default) and a real PostgreSQL server."""

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.catalog import Catalog, DocumentRecord, DocumentStatus, JobDocument, JobStatus
from core.db import make_engine, make_session_factory
from tests.helpers import make_settings


@pytest.fixture
def catalog(database_url: str | None, tmp_path: Path) -> Iterator[Catalog]:
    engine = make_engine(make_settings(tmp_path, database_url=database_url))
    try:
        yield Catalog(make_session_factory(engine))
    finally:
        engine.dispose()


def record(document_id: str, content_hash: str = "h1") -> DocumentRecord:
    return DocumentRecord(
        document_id=document_id,
        title=f"Title {document_id}",
        source=f"/docs/{document_id}.md",
        content_hash=content_hash,
        chunks=3,
        access_groups=["public", "legal"],
        metadata={"jurisdiction": "EU", "effective_date": "2018-05-25"},
        ingested_at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    )


class TestCatalog:
    def test_documents_round_trip_and_replace(self, catalog: Catalog) -> None:
        catalog.save_document(record("gdpr"))
        catalog.save_document(record("ai-act"))
        catalog.save_document(record("gdpr", content_hash="h2"))
        assert [d.document_id for d in catalog.documents()] == ["ai-act", "gdpr"]
        stored = catalog.document("gdpr")
        assert stored is not None
        assert (stored.content_hash, stored.access_groups) == ("h2", ["public", "legal"])
        assert stored.metadata["jurisdiction"] == "EU"
        assert stored.ingested_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
        catalog.forget_document("gdpr")
        assert catalog.document("gdpr") is None

    def test_job_lifecycle_and_progress(self, catalog: Catalog) -> None:
        job_id = catalog.create_job(["/docs/a.md", "/docs/b.pdf"], requested_by="admin")
        queued = catalog.job(job_id)
        assert queued is not None and queued.status is JobStatus.QUEUED
        assert (queued.total, queued.done) == (2, 0)
        catalog.start_job(job_id)
        catalog.record_document(
            job_id,
            0,
            JobDocument(
                source="/docs/a.md",
                document_id="a",
                status=DocumentStatus.INGESTED,
                chunks=4,
                error=None,
                duration_ms=12.5,
            ),
        )
        running = catalog.job(job_id)
        assert running is not None and running.status is JobStatus.RUNNING
        assert (running.done, running.counts["ingested"]) == (1, 1)
        catalog.record_document(
            job_id,
            1,
            JobDocument(
                source="/docs/b.pdf",
                document_id="b",
                status=DocumentStatus.FAILED,
                chunks=0,
                error="b.pdf: no text found",
                duration_ms=3.0,
            ),
        )
        finished = catalog.finish_job(job_id)
        assert finished.status is JobStatus.COMPLETED_WITH_ERRORS
        assert finished.documents[1].error == "b.pdf: no text found"
        assert finished.finished_at is not None

    def test_jobs_are_listed_newest_first(self, catalog: Catalog) -> None:
        first = catalog.create_job(["x"], requested_by="a")
        second = catalog.create_job(["y"], requested_by="b")
        assert [j.job_id for j in catalog.jobs()][:2] == [second, first]
        assert catalog.job(str(uuid.uuid4())) is None
