import shutil
from pathlib import Path

import pytest

from core.settings import Settings
from ingest.pipeline import DocumentStatus, Ingestor, discover_files
from retrieval.embedder import Embedder
from retrieval.store import VectorStore
from tests.conftest import EPRIVACY, make_settings


def ingest(
    settings: Settings, embedder: Embedder, files: list[Path]
) -> tuple[list[str], int, set[str]]:
    store = VectorStore(settings)
    try:
        report = Ingestor.from_settings(settings, store, embedder).run(files)
        ids = {chunk.chunk_id for chunk in store.chunks()}
        return [o.status.value for o in report.documents], store.count(), ids
    finally:
        store.close()


@pytest.mark.integration
class TestIngestor:
    def test_reingesting_the_same_files_changes_nothing(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        settings = make_settings(tmp_path / "data")
        first_status, first_count, first_ids = ingest(settings, embedder, [EPRIVACY])
        again_status, again_count, again_ids = ingest(settings, embedder, [EPRIVACY])
        assert first_status == ["ingested"]
        assert again_status == ["unchanged"]
        assert first_count > 20
        assert again_count == first_count
        assert again_ids == first_ids

    def test_a_changed_document_replaces_its_chunks(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        settings = make_settings(tmp_path / "data")
        policy = tmp_path / "docs" / "policy.md"
        policy.parent.mkdir()
        policy.write_text(
            "# Policy\n\n## Retention\n\nKeep records of processing for five years.\n"
        )
        ingest(settings, embedder, [policy])
        policy.write_text("# Policy\n\n## Retention\n\nKeep records of processing for ten years.\n")
        status, count, _ = ingest(settings, embedder, [policy])
        store = VectorStore(settings)
        try:
            texts = [chunk.text for chunk in store.chunks("policy")]
        finally:
            store.close()
        assert status == ["ingested"]
        assert count == 1
        assert texts == ["Keep records of processing for ten years."]

    def test_bad_files_fail_alone_with_clear_errors(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        shutil.copy(EPRIVACY, docs / "eprivacy.html")
        (docs / "empty.txt").write_text("")
        (docs / "notes.md").write_text("# Notes\n\nRecords of processing are kept centrally.\n")
        (docs / "scan.xyz").write_bytes(b"\x00\x01")  # not discovered: unsupported suffix
        settings = make_settings(tmp_path / "data")
        store = VectorStore(settings)
        try:
            report = Ingestor.from_settings(settings, store, embedder).run(
                [*discover_files([docs]), docs / "scan.xyz"]
            )
        finally:
            store.close()
        outcomes = {Path(o.source).name: o for o in report.documents}
        assert outcomes["eprivacy.html"].status is DocumentStatus.INGESTED
        assert outcomes["notes.md"].status is DocumentStatus.INGESTED
        assert outcomes["empty.txt"].status is DocumentStatus.FAILED
        assert outcomes["empty.txt"].error == "empty.txt: no text found"
        assert outcomes["scan.xyz"].status is DocumentStatus.FAILED
        assert "unsupported format .xyz" in (outcomes["scan.xyz"].error or "")

    def test_manifest_sets_document_id_and_title(self, tmp_path: Path, embedder: Embedder) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "p.md").write_text("# Policy\n\nRecords of processing are kept.\n")
        (docs / "manifest.json").write_text(
            '{"p.md": {"document_id": "pol-7", "title": "Policy 7"}}'
        )
        assert [p.name for p in discover_files([docs])] == ["p.md"]
        settings = make_settings(tmp_path / "data")
        store = VectorStore(settings)
        try:
            Ingestor.from_settings(settings, store, embedder).run(discover_files([docs]))
            hit = store.chunks()[0]
        finally:
            store.close()
        assert (hit.document_id, hit.document_title) == ("pol-7", "Policy 7")
        assert hit.access_groups == ["public"]  # the default for documents that name none
