import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import models

from core.catalog import DocumentStatus, JobStatus
from core.sentences import passage_sentences
from core.settings import Settings
from ingest.pipeline import discover_files
from retrieval.embedder import Embedder
from tests.helpers import EPRIVACY, GDPR, ROOT, make_settings, services_for


def ingest(settings: Settings, embedder: Embedder, files: list[Path]) -> tuple[list[str], set[str]]:
    """Statuses of one job, and the ids of every chunk in the store afterwards."""
    with services_for(settings, embedder) as services:
        job = services.ingestor().run(files)
        return [d.status.value for d in job.documents], {
            c.chunk_id for c in services.store.chunks()
        }


@pytest.mark.integration
class TestIngestor:
    def test_reingesting_the_same_files_changes_nothing(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        settings = make_settings(tmp_path / "data")
        first_status, first_ids = ingest(settings, embedder, [EPRIVACY])
        again_status, again_ids = ingest(settings, embedder, [EPRIVACY])
        assert first_status == ["ingested"]
        assert again_status == ["unchanged"]
        assert len(first_ids) > 20
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
        status, ids = ingest(settings, embedder, [policy])
        with services_for(settings, embedder) as services:
            texts = [chunk.text for chunk in services.store.chunks("policy")]
            record = services.catalog.document("policy")
        assert status == ["ingested"]
        assert len(ids) == 1
        assert texts == ["Keep records of processing for ten years."]
        assert record is not None and record.chunks == 1

    def test_bad_files_fail_alone_with_clear_errors(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        shutil.copy(EPRIVACY, docs / "eprivacy.html")
        (docs / "empty.txt").write_text("")
        (docs / "notes.md").write_text("# Notes\n\nRecords of processing are kept centrally.\n")
        (docs / "huge.txt").write_text("word " * 300_000)  # 1.5 MB, over the 1 MB limit below
        (docs / "vanishing.md").write_text(
            "# Gone\n\nThis file is deleted before the job reads it.\n"
        )
        files = [*discover_files([docs]), docs / "scan.xyz"]
        (docs / "vanishing.md").unlink()
        (docs / "scan.xyz").write_bytes(b"\x00\x01")
        settings = make_settings(tmp_path / "data", max_file_mb=1)
        with services_for(settings, embedder) as services:
            job = services.ingestor().run(files)
            stored = {c.document_id for c in services.store.chunks()}
        outcomes = {Path(d.source).name: d for d in job.documents}
        assert job.status is JobStatus.COMPLETED_WITH_ERRORS
        assert outcomes["eprivacy.html"].status is DocumentStatus.INGESTED
        assert outcomes["notes.md"].status is DocumentStatus.INGESTED
        assert stored == {"eprivacy", "notes"}
        assert outcomes["empty.txt"].error == "empty.txt: no text found"
        assert (
            outcomes["huge.txt"].error
            == "huge.txt: 1.4 MB is over the 1 MB limit (REGULUS_MAX_FILE_MB)"
        )
        assert (
            outcomes["vanishing.md"].error
            == "vanishing.md: the file disappeared before it could be read"
        )
        assert "scan.xyz: unsupported format .xyz" in (outcomes["scan.xyz"].error or "")

    def test_documents_embedded_together_or_alone_are_stored_alike(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        """The group size only changes how texts are batched, never what is stored."""
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "notes.md").write_text("# Notes\n\nRecords of processing are kept centrally.\n")
        files = [EPRIVACY, docs / "notes.md", docs / "missing.md"]
        question = embedder.embed_one("Who may store cookies on a user's terminal?")
        stored = []
        for group in (1, 2048):
            settings = make_settings(tmp_path / f"group-{group}", embed_group_chunks=group)
            with services_for(settings, embedder) as services:
                job = services.ingestor().run(files)
                hits = services.store.search(
                    dense=question, sparse=None, limit=10, query_filter=models.Filter()
                )
            stored.append(
                (
                    [(d.document_id, d.status, d.chunks) for d in job.documents],
                    [(hit.chunk.chunk_id, round(hit.score, 4)) for hit in hits],
                )
            )
        assert stored[0] == stored[1]
        assert [status for _, status, _ in stored[0][0]] == [
            DocumentStatus.INGESTED,
            DocumentStatus.INGESTED,
            DocumentStatus.FAILED,
        ]
        assert len(stored[0][1]) == 10

    def test_manifest_sets_document_id_and_title(self, tmp_path: Path, embedder: Embedder) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "p.md").write_text("# Policy\n\nRecords of processing are kept.\n")
        (docs / "manifest.json").write_text(
            '{"p.md": {"document_id": "pol-7", "title": "Policy 7"}}'
        )
        assert [p.name for p in discover_files([docs])] == ["p.md"]
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            services.ingestor().run(discover_files([docs]))
            hit = services.store.chunks()[0]
        assert (hit.document_id, hit.document_title) == ("pol-7", "Policy 7")
        assert hit.access_groups == ["public"]  # the default for documents that name none

    def test_manifest_aliases_name_the_document_and_follow_a_manifest_change(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        (docs / "p.md").write_text("# Policy\n\nCookies need consent before they are set.\n")
        manifest = docs / "manifest.json"
        manifest.write_text('{"p.md": {"document_id": "pol", "aliases": ["cookie law"]}}')
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            services.ingestor().run(discover_files([docs]))
            assert services.document_names().find("What does the cookie law say?") == ("pol",)
            manifest.write_text('{"p.md": {"document_id": "pol", "aliases": ["tracking rules"]}}')
            services.ingestor().run(discover_files([docs]))
            names = services.document_names()
            assert names.find("And the tracking rules?") == ("pol",)
            assert names.find("What does the cookie law say?") == ()

    def test_sentence_vectors_are_stored_once_and_follow_their_document(
        self, tmp_path: Path, embedder: Embedder, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        settings = make_settings(tmp_path / "data")
        policy = tmp_path / "docs" / "policy.md"
        policy.parent.mkdir()
        kept = "Keep records of processing for five years."
        dropped = "Destroy the records when the retention period ends."
        added = "Report every destruction to the data protection officer."
        policy.write_text(f"# Policy\n\n## Retention\n\n{kept} {dropped}\n\nShort line.\n")
        embedded: list[str] = []
        real_embed = embedder.embed
        monkeypatch.setattr(
            embedder, "embed", lambda texts, role: embedded.extend(texts) or real_embed(texts, role)
        )
        with services_for(settings, embedder) as services:
            services.ingestor().run([policy])
            stored = services.sentence_vectors.get(embedder.signature, [kept, dropped])
            assert set(stored) == {kept, dropped}  # "Short line." is too short to be quoted
            np.testing.assert_allclose(stored[kept], real_embed([kept])[0], atol=1e-5)
            policy.write_text(f"# Policy\n\n## Retention\n\n{kept} {added}\n")
            embedded.clear()
            services.ingestor().run([policy])
            assert added in embedded and kept not in embedded  # only the new sentence embedded
            after = services.sentence_vectors.get(embedder.signature, [kept, dropped, added])
            assert set(after) == {kept, added}
            services.ingestor().delete("policy")
            assert services.sentence_vectors.count() == 0

    def test_sentence_vectors_left_out_are_filled_in_by_the_next_job(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        settings = make_settings(tmp_path / "data", sentence_vectors=False)
        with services_for(settings, embedder) as services:
            services.ingestor().run([EPRIVACY])
            assert services.store.count() > 20
            assert services.sentence_vectors.count() == 0
        with services_for(settings.model_copy(update={"sentence_vectors": True}), embedder) as on:
            job = on.ingestor().run([EPRIVACY])
            chunks = on.store.chunks("eprivacy")
            sentences = list(dict.fromkeys(s for c in chunks for s in passage_sentences(c.text)))
            assert [d.status for d in job.documents] == [DocumentStatus.UNCHANGED]
            assert on.sentence_vectors.missing(embedder.signature, "eprivacy", sentences) == []
            assert on.sentence_vectors.count() == len(sentences) > 100

    def test_delete_prune_and_reindex(self, tmp_path: Path, embedder: Embedder) -> None:
        docs = tmp_path / "docs"
        docs.mkdir()
        for name in ("a", "b", "c"):
            (docs / f"{name}.md").write_text(
                f"# Doc {name}\n\nRule {name} applies to every firm.\n"
            )
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            ingestor = services.ingestor()
            ingestor.run(discover_files([docs]))
            before = {c.chunk_id for c in services.store.chunks("a")}
            assert ingestor.delete("b") is True
            assert ingestor.delete("b") is False
            (docs / "c.md").unlink()
            assert ingestor.prune(docs) == ["c"]
            job = ingestor.reindex()
            after = {c.chunk_id for c in services.store.chunks("a")}
            remaining = {c.document_id for c in services.store.chunks()}
            catalogued = [d.document_id for d in services.catalog.documents()]
        assert [d.status for d in job.documents] == [DocumentStatus.INGESTED]  # forced re-parse
        assert after == before  # same ids in place
        assert remaining == {"a"}
        assert catalogued == ["a"]

    def test_jobs_are_recorded_with_per_document_rows(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        with services_for(make_settings(tmp_path / "data"), embedder) as services:
            job = services.ingestor().run([EPRIVACY], requested_by="admin@example.com")
            stored = services.catalog.job(job.job_id)
            listed = services.catalog.jobs()
        assert stored is not None and stored.status is JobStatus.SUCCEEDED
        assert (stored.total, stored.done, stored.counts["ingested"]) == (1, 1, 1)
        assert stored.requested_by == "admin@example.com"
        assert stored.documents[0].duration_ms and stored.documents[0].duration_ms > 0
        assert [j.job_id for j in listed] == [job.job_id]


KILL_SCRIPT = """
import sys
from pathlib import Path
from api.services import Services
from core.settings import Settings
services = Services(Settings(_env_file=None, data_dir=Path(sys.argv[1])))
def report(document):
    print(document.document_id, flush=True)
services.ingestor().run([Path(p) for p in sys.argv[2:]], on_document=report)
"""


@pytest.mark.slow
@pytest.mark.integration
class TestCrashRecovery:
    def test_kill_9_mid_job_then_rerun_equals_an_uninterrupted_run(
        self, tmp_path: Path, embedder: Embedder
    ) -> None:
        files = [EPRIVACY, GDPR]
        reference = make_settings(tmp_path / "reference")
        _, reference_ids = ingest(reference, embedder, files)

        crashed = make_settings(tmp_path / "crashed")
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        worker = subprocess.Popen(
            [sys.executable, "-c", KILL_SCRIPT, str(crashed.data_dir), *map(str, files)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == b"eprivacy"  # first document committed
        time.sleep(4)  # well into GDPR: being parsed, embedded or written
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()

        statuses, recovered_ids = ingest(crashed, embedder, files)
        with services_for(crashed, embedder) as services:
            points = services.store.count()
            sentences = services.sentence_vectors.count()
            jobs = services.catalog.jobs()
        with services_for(reference, embedder) as services:
            reference_sentences = services.sentence_vectors.count()
        assert statuses == ["unchanged", "ingested"]
        assert recovered_ids == reference_ids
        assert points == len(reference_ids)  # no duplicates, no orphans
        assert sentences == reference_sentences > 0
        # The killed job is marked interrupted by the next run, with what it left undone.
        assert jobs[-1].status.value == "interrupted"
        assert "1 of 2 documents left" in (jobs[-1].error or "")
