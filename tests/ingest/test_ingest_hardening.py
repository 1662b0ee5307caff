"""Findings of the adversarial review (issue 20) in ingestion: manifest metadata changes reach the
stored chunks without re-embedding, and document ids never collide silently."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from qdrant_client import QdrantClient

from core.audit import AuditEvent
from core.catalog import DocumentStatus
from core.models import Chunk, DocumentFields, Principal
from ingest.manifest import Manifest
from ingest.parsers import document_id_for
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from retrieval.store.edge import EdgeVectorStore
from retrieval.store.server import QdrantServerStore
from tests.helpers import SAMPLE, make_settings, services_for

MEMO = "# Memo\n\n## Mergers\n\nThe board approved the Zephyr merger at its March meeting.\n"


def _write(folder: Path, manifest: dict[str, object], **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


class TestDocumentIds:
    def test_ascii_names_keep_their_ids(self) -> None:
        assert document_id_for(Path("GDPR_consolidated (2016).xhtml")) == "gdpr-consolidated-2016"
        assert document_id_for(Path("sp800-53r5-moderate-catalog.json")) == (
            "sp800-53r5-moderate-catalog"
        )

    def test_the_sample_corpus_keeps_its_manifest_ids(self) -> None:
        manifest = Manifest.for_folder(SAMPLE)
        ids = {
            path.name: manifest.for_file(path.name).document_id or document_id_for(path)
            for path in discover_files([SAMPLE])
        }
        assert ids == {
            "aia.xhtml": "ai-act",
            "eprivacy_consolidated.html": "eprivacy",
            "gdpr_consolidated.xhtml": "gdpr",
            "sp800-53r5-moderate-catalog.json": "nist-sp800-53",
        }

    def test_non_ascii_names_keep_their_letters(self) -> None:
        assert document_id_for(Path("Политика.md")) == "политика"
        assert document_id_for(Path("Richtlinie Überwachung.md")) == "richtlinie-überwachung"
        decomposed = unicodedata.normalize("NFD", "Überwachung.md")
        assert document_id_for(Path(decomposed)) == document_id_for(Path("Überwachung.md"))


@pytest.mark.integration
class TestIdsWithinAJob:
    def test_two_files_with_one_id_fail_the_second_clearly(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "guidelines.md").write_text("# Guidelines\n\nKeep records for six years.\n")
        (docs / "guidelines.txt").write_text("Report breaches within three days.\n")
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            job = services.ingestor().run(list(discover_files([docs])))
            texts = [c.text for c in services.store.chunks("guidelines")]
        assert [d.status for d in job.documents] == [DocumentStatus.INGESTED, DocumentStatus.FAILED]
        error = job.documents[1].error or ""
        assert "guidelines.txt" in error and "'guidelines'" in error and "guidelines.md" in error
        assert texts == ["Keep records for six years."]

    def test_the_same_file_twice_is_one_document(self, tmp_path: Path, embedder: Embedder) -> None:
        docs = tmp_path / "docs"
        (docs / "copy").mkdir(parents=True)
        text = "# Rules\n\nKeep records for six years.\n"
        (docs / "rules.md").write_text(text)
        (docs / "copy" / "rules.md").write_text(text)
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            twice = services.ingestor().run([docs / "rules.md", docs / "rules.md"])
            copies = services.ingestor().run([docs / "rules.md", docs / "copy" / "rules.md"])
            chunks = services.store.chunks()
        assert [d.status for d in twice.documents] == [DocumentStatus.INGESTED]
        assert [d.status for d in copies.documents] == [DocumentStatus.UNCHANGED] * 2
        assert [c.document_id for c in chunks] == ["rules"]

    def test_a_non_ascii_name_is_ingested(self, tmp_path: Path, embedder: Embedder) -> None:
        policy = tmp_path / "Политика.md"
        policy.write_text("# Политика\n\nХраните записи шесть лет.\n", encoding="utf-8")
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            job = services.ingestor().run([policy])
        assert (job.documents[0].status, job.documents[0].document_id) == (
            DocumentStatus.INGESTED,
            "политика",
        )


@pytest.mark.integration
class TestMetadataChanges:
    def test_changed_groups_reach_the_chunks_without_reembedding(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        docs = tmp_path / "docs"
        _write(docs, {"memo.md": {"access_groups": ["public"]}}, **{"memo.md": MEMO})
        settings = make_settings(tmp_path / "data")
        public = Principal(subject="p", groups=["public"])
        question = "What did the board approve in March?"
        with services_for(settings, embedder) as services:
            ingestor = services.ingestor()
            ingestor.run([docs / "memo.md"])
            retriever = services.retriever()
            assert [h.chunk.document_id for h in retriever.run(question, public)] == ["memo"]
            before = services.store.chunks("memo")
            _write(
                docs,
                {
                    "memo.md": {
                        "access_groups": ["board"],
                        "title": "Board memo",
                        "jurisdiction": "UK",
                        "effective_date": "2025-03-01",
                        "document_type": "minutes",
                    }
                },
            )
            embedded: list[int] = []
            original = embedder.embed
            embedder.embed = lambda texts, *role: (  # type: ignore[method-assign]
                embedded.append(len(texts)) or original(texts, *role)
            )
            try:
                job = ingestor.run([docs / "memo.md"], requested_by="key:admin")
            finally:
                embedder.embed = original  # type: ignore[method-assign]
            after = services.store.chunks("memo")
            record = services.catalog.document("memo")
            hits = retriever.run(question, public)
            board = retriever.run(question, Principal(subject="b", groups=["board"]))
            rows = [e for e in services.audit.export() if e.event == AuditEvent.DOCUMENT_UPDATED]
        assert [d.status for d in job.documents] == [DocumentStatus.UPDATED]
        assert sum(embedded) == 0  # nothing re-embedded
        assert hits == []
        assert [h.chunk.document_id for h in board] == ["memo"]
        assert [c.chunk_id for c in after] == [c.chunk_id for c in before]
        assert {(c.document_title, c.jurisdiction, c.document_type) for c in after} == {
            ("Board memo", "UK", "minutes")
        }
        assert {str(c.effective_date) for c in after} == {"2025-03-01"}
        assert all(c.access_groups == ["board"] for c in after)
        assert record is not None and record.access_groups == ["board"]
        assert (record.title, record.metadata["jurisdiction"]) == ("Board memo", "UK")
        [row] = rows
        assert row.actor == "key:admin" and row.target == "memo"
        assert row.detail["changes"]["access_groups"] == {"from": ["public"], "to": ["board"]}
        assert row.detail["changes"]["document_title"]["to"] == "Board memo"

    def test_an_interrupted_update_is_finished_on_the_next_run(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        """A crash between the intent and the store write leaves the intent; the next job rolls it
        forward before anything else, so catalog and chunks agree again."""
        docs = tmp_path / "docs"
        _write(docs, {"memo.md": {"access_groups": ["public"]}}, **{"memo.md": MEMO})
        settings = make_settings(tmp_path / "data")
        with services_for(settings, embedder) as services:
            services.ingestor().run([docs / "memo.md"])
            record = services.catalog.document("memo")
            assert record is not None
            wanted = DocumentFields(
                document_id="memo", document_title=record.title, access_groups=["board"]
            )
            services.catalog.begin_update("memo", wanted)  # ... and the process died here
        with services_for(settings, embedder) as services:
            services.ingestor().recover()
            chunks = services.store.chunks("memo")
            record = services.catalog.document("memo")
        assert all(c.access_groups == ["board"] for c in chunks)
        assert record is not None and record.access_groups == ["board"]


def _chunk(chunk_id: str, document_id: str) -> Chunk:
    return Chunk(
        chunk_id=chunk_id,
        document_id=document_id,
        document_title="Old",
        section="Rule 1",
        text="text",
        source="x.md",
        content_hash="h",
        access_groups=["public"],
    )


@pytest.mark.parametrize("deployment", ["edge", "server"])
def test_both_stores_update_a_documents_fields_in_place(tmp_path: Path, deployment: str) -> None:
    import numpy as np
    from qdrant_client import models

    def match_any(key: str, values: list[str]) -> models.FieldCondition:
        return models.FieldCondition(key=key, match=models.MatchAny(any=values))

    store = (
        EdgeVectorStore(tmp_path / "vectors")
        if deployment == "edge"
        else QdrantServerStore(QdrantClient(location=":memory:"), "test")
    )
    try:
        store.ensure_collection(4)
        chunks = [_chunk(f"00000000-0000-0000-0000-00000000000{n}", d) for n, d in enumerate("aab")]
        dense = np.eye(3, 4, dtype=np.float32)
        sparse = [models.SparseVector(indices=[n], values=[1.0]) for n in range(3)]
        store.upsert(chunks, dense, sparse)
        store.update_document_fields(
            "a",
            DocumentFields(
                document_id="a", document_title="GDPR", jurisdiction="EU", access_groups=["board"]
            ),
        )
        by_document = {c.chunk_id: c for c in store.chunks()}
        board_only = store.search(
            dense=dense[0],
            sparse=None,
            limit=5,
            query_filter=models.Filter(must=[match_any("access_groups", ["board"])]),
        )
    finally:
        store.close()
    updated = [c for c in by_document.values() if c.document_id == "a"]
    assert {(c.document_title, c.jurisdiction, tuple(c.access_groups)) for c in updated} == {
        ("GDPR", "EU", ("board",))
    }
    untouched = [c for c in by_document.values() if c.document_id == "b"]
    assert [(c.document_title, c.access_groups) for c in untouched] == [("Old", ["public"])]
    assert sorted(h.chunk.document_id for h in board_only) == ["a", "a"]


@pytest.mark.integration
class TestInterruptedJobs:
    def test_a_stopped_job_is_interrupted_then_resumed_to_the_end(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        import threading

        docs = tmp_path / "docs"
        _write(docs, {"memo.md": {"access_groups": ["board"]}}, **{"memo.md": MEMO})
        (docs / "rules.md").write_text("# Rules\n\nKeep records for six years.\n")
        stop = threading.Event()
        stop.set()  # a shutdown before the first document was stored
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            ingestor = services.ingestor()
            stopped = ingestor.run(list(discover_files([docs])), stop=stop)
            resumed = ingestor.resume(stopped.job_id, requested_by="key:admin")
            again = services.catalog.job(stopped.job_id)
            memo = services.catalog.document("memo")
        assert stopped.status.value == "interrupted" and stopped.counts["pending"] == 2
        assert "2 of 2 documents left" in (stopped.error or "")
        assert resumed.status.value == "succeeded" and resumed.counts["ingested"] == 2
        assert again is not None and again.job_id == stopped.job_id
        assert memo is not None and memo.access_groups == ["board"]  # its manifest still applies

    def test_a_job_of_a_dead_process_is_marked_interrupted(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        import socket

        from core.catalog import JobRow

        settings = make_settings(tmp_path / "data")
        with services_for(settings, embedder) as services:
            alive = services.catalog.create_job(["a.md"], "cli")  # this process: alive
            dead = services.catalog.create_job(["b.md"], "cli")
            other_host = services.catalog.create_job(["c.md"], "cli")
            with services.catalog._sessions.begin() as session:
                session.get_one(JobRow, dead).worker = f"{socket.gethostname()}:999999999:1"
                session.get_one(JobRow, other_host).worker = "elsewhere:1:1"
            services.ingestor().recover()
            statuses = {j: services.catalog.job(j).status.value for j in (alive, dead, other_host)}  # type: ignore[union-attr]
        assert statuses == {alive: "queued", dead: "interrupted", other_host: "queued"}
