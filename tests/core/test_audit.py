"""The hash-chained audit log on SQLite and PostgreSQL: appends stay one chain under concurrency,
and `verify` names the first edited or deleted row; plus the Alembic migrations it lives in."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from api.cli.main import app
from core.audit import AuditEvent, AuditLog, row_hash
from core.db import Base, make_engine, make_session_factory
from core.models import (
    Answer,
    Citation,
    Principal,
    RetrievedChunk,
    Role,
    SearchFilters,
    Usage,
)
from core.settings import get_settings
from retrieval.embedder import Embedder
from tests.helpers import make_settings, retrieved, services_for


@pytest.fixture
def audit(engine: Engine) -> AuditLog:
    return AuditLog(make_session_factory(engine), key=KEY)


KEY = b"test-audit-key-" * 3
ALICE = Principal(subject="key:alice", groups=["public"], role=Role.ANALYST)


def _passage(chunk_id: str) -> RetrievedChunk:
    return retrieved(chunk_id, "Notify within 72 hours.", "Article 33")


def _answer(text_: str, refused: bool = False) -> Answer:
    citation = Citation(
        n=1,
        document_id="gdpr",
        document_title="GDPR",
        section="Article 33",
        section_path="Article 33 > (1)",
        chunk_id="c1",
        quote="Notify within 72 hours.",
    )
    return Answer(
        text=text_,
        citations=[citation],
        model="m",
        refused=refused,
        usage=Usage(model="m", prompt_tokens=100, completion_tokens=20, cost_usd=0.0012),
    )


def _fill(audit: AuditLog, n: int) -> None:
    for i in range(n):
        audit.append(AuditEvent.DOCUMENT_ADDED, "cli", target=f"doc-{i}", detail={"i": i})


class TestChain:
    def test_query_rows_keep_everything_and_verify(self, audit: AuditLog) -> None:
        query_id = audit.record_query(
            ALICE,
            "Mail jane@example.com: when to notify?",
            SearchFilters(document_ids=["gdpr"], effective_from=dt.date(2018, 1, 1)),
            _answer("Within 72 hours [1]. Call +44 20 7946 0958."),
            [_passage("c1"), _passage("c2")],
            latency_ms=12.3456,
        )
        entries, total = audit.entries()
        assert (total, entries[0].id) == (1, query_id)
        row = entries[0]
        assert (row.event, row.actor, row.role) == ("query", "key:alice", "analyst")
        assert row.question == "Mail [EMAIL]: when to notify?"
        assert row.answer == "Within 72 hours [1]. Call [PHONE]."
        assert (row.prompt_tokens, row.completion_tokens, row.cost_usd) == (100, 20, 0.0012)
        assert (row.model, row.refused, row.latency_ms) == ("m", False, 12.346)
        assert row.detail["filters"] == {"document_ids": ["gdpr"], "effective_from": "2018-01-01"}
        assert row.detail["chunk_ids"] == ["c1", "c2"]
        assert row.detail["citations"] == [{"n": 1, "chunk_id": "c1", "document_id": "gdpr"}]
        assert (row.detail["pii_question"], row.detail["pii_answer"]) == (["email"], ["phone"])
        assert audit.verify().ok

    def test_redaction_can_be_turned_off(self, engine: Engine) -> None:
        raw = AuditLog(make_session_factory(engine), key=KEY, redact_pii=False)
        raw.record_query(ALICE, "jane@example.com?", None, _answer("No."), [], 1.0)
        assert raw.entries()[0][0].question == "jane@example.com?"

    def test_failed_query_is_recorded(self, audit: AuditLog) -> None:
        audit.record_query(ALICE, "q", None, None, [_passage("c9")], 5.0, error="model down")
        row = audit.entries()[0][0]
        assert (row.answer, row.detail["error"], row.detail["chunk_ids"]) == (
            None,
            "model down",
            ["c9"],
        )

    def test_edited_row_is_named(self, audit: AuditLog, engine: Engine) -> None:
        _fill(audit, 5)
        assert audit.verify().ok and audit.verify().checked == 5
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET target = 'forged' WHERE id = 3"))
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 3)
        assert "edited" in (report.problem or "")

    def test_edited_row_with_recomputed_hash_breaks_the_next_link(
        self, audit: AuditLog, engine: Engine
    ) -> None:
        _fill(audit, 4)
        forged = audit.entries(limit=1, offset=2)[0][0].model_dump()  # row 2
        assert forged["id"] == 2
        forged["target"] = "forged"
        with engine.begin() as connection:  # the forger also recomputes row 2's own hash
            connection.execute(
                text("UPDATE audit_log SET target = 'forged', hash = :h WHERE id = 2"),
                {"h": row_hash(forged, KEY)},
            )
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 3)
        assert "does not chain to row 2" in (report.problem or "")

    def test_deleted_rows_are_named(self, audit: AuditLog, engine: Engine) -> None:
        _fill(audit, 5)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_log WHERE id = 2"))
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 2)
        assert "missing" in (report.problem or "")

    def test_deleted_tail_is_noticed(self, audit: AuditLog, engine: Engine) -> None:
        _fill(audit, 5)
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM audit_log WHERE id >= 4"))
        report = audit.verify()
        assert (report.ok, report.first_bad_id) == (False, 4)

    def test_concurrent_writers_keep_one_chain(self, engine: Engine) -> None:
        """Separate AuditLog objects (own locks, as separate processes would have) on separate
        engines, all appending at once: the database's lock alone must keep the chain linear."""
        engines = [sqlalchemy.create_engine(engine.url) for _ in range(4)]
        if engine.dialect.name == "sqlite":
            engines = [
                sqlalchemy.create_engine(engine.url, connect_args={"timeout": 30}) for _ in range(4)
            ]
        logs = [AuditLog(make_session_factory(e), key=KEY) for e in engines]
        errors: list[BaseException] = []

        def write(log: AuditLog, n: int) -> None:
            try:
                for i in range(n):
                    log.append(AuditEvent.DENIED, f"w{id(log)}", detail={"i": i})
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=write, args=(log, 15)) for log in logs for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for e in engines:
            e.dispose()
        assert errors == []
        shared = AuditLog(make_session_factory(engine), key=KEY)
        report = shared.verify()
        assert report.ok, report.problem
        assert report.checked == 4 * 2 * 15

    def test_export_range_history_and_usage(self, audit: AuditLog, engine: Engine) -> None:
        bob = Principal(subject="key:bob", groups=["board"])
        audit.record_query(ALICE, "first?", None, _answer("One [1]."), [], 1.0)
        audit.record_query(bob, "board secret?", None, _answer("Zephyr [1]."), [], 1.0)
        audit.record_query(ALICE, "second?", None, _answer("No.", refused=True), [], 1.0)
        audit.record_query(ALICE, "failed?", None, None, [], 1.0, error="down")
        with engine.begin() as connection:  # back-date row 1 (then the chain is broken: fine here)
            connection.execute(
                text("UPDATE audit_log SET time = :t WHERE id = 1"),
                {"t": dt.datetime(2020, 1, 1, tzinfo=dt.UTC)},
            )
        since = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
        assert [e.id for e in audit.export(since=since)] == [2, 3, 4]
        assert [e.id for e in audit.export(until=since)] == [1]
        items, total = audit.history("key:alice")
        assert total == 2  # the failed query has no answer to show
        assert [(i.question, i.refused) for i in items] == [("second?", True), ("first?", False)]
        assert "Zephyr" not in json.dumps([i.model_dump(mode="json") for i in items])
        usage = {u.principal: u for u in audit.usage()}
        assert usage["key:alice"].queries == 3 and usage["key:alice"].refused == 1
        assert usage["key:alice"].prompt_tokens == 200
        assert usage["key:alice"].cost_usd == pytest.approx(0.0024)
        assert [u.principal for u in audit.usage("key:bob")] == ["key:bob"]


class TestCli:
    def test_verify_and_export_commands(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("REGULUS_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("REGULUS_DATABASE_URL", raising=False)
        get_settings.cache_clear()
        runner = CliRunner()
        created = runner.invoke(app, ["keys", "create", "--role", "admin", "--name", "ops"])
        assert created.exit_code == 0, created.output
        intact = runner.invoke(app, ["audit", "verify"])
        assert intact.exit_code == 0 and "intact: 1 rows" in intact.output
        today = dt.datetime.now(dt.UTC).date()
        out = tmp_path / "audit.jsonl"
        exported = runner.invoke(
            app, ["audit", "export", "--since", str(today), "--until", str(today), "-o", str(out)]
        )
        assert exported.exit_code == 0, exported.output
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r["id"], r["event"]) for r in rows] == [(1, "key.created")]
        empty = runner.invoke(app, ["audit", "export", "--until", "2000-01-01"])
        assert empty.exit_code == 0 and empty.output == ""
        bad_date = runner.invoke(app, ["audit", "export", "--since", "yesterday"])
        assert bad_date.exit_code == 2 and "not an ISO date" in bad_date.output
        engine = make_engine(get_settings())
        with engine.begin() as connection:
            connection.execute(text("UPDATE audit_log SET actor = 'someone-else'"))
        engine.dispose()
        broken = runner.invoke(app, ["audit", "verify"])
        assert broken.exit_code == 1 and "BROKEN at row 1" in broken.output
        get_settings.cache_clear()


class TestMigrations:
    def test_migrations_create_exactly_the_models(self, engine: Engine) -> None:
        """Every table and column the code declares has a migration, on both backends."""
        import core.auth
        import core.catalog  # noqa: F401  (their tables, beside the audit log's)

        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []

    def test_a_database_made_by_create_all_is_stamped_and_upgraded(self, tmp_path: Path) -> None:
        import core.catalog

        url = f"sqlite:///{tmp_path / 'regulus.db'}"
        legacy = sqlalchemy.create_engine(url)
        tables = [
            core.catalog.DocumentRow.__table__,
            core.catalog.JobRow.__table__,
            core.catalog.JobDocumentRow.__table__,
        ]
        Base.metadata.create_all(legacy, tables=tables)
        with legacy.begin() as connection:
            # As the catalog was before migrations existed: no injection screening yet.
            connection.execute(text("ALTER TABLE ingest_job_documents DROP COLUMN suspect_chunks"))
            # ... nor resumable jobs and metadata updates (0005), nor saved-answer counts (0006).
            for table, column in [
                ("ingest_jobs", "worker"),
                ("ingest_job_documents", "path"),
                ("ingest_job_documents", "entry"),
                ("ingest_job_documents", "flagged_answers"),
                ("documents", "pending_update"),
            ]:
                connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
            connection.execute(
                text(
                    "INSERT INTO ingest_jobs (job_id, status, requested_by, created_at) "
                    "VALUES ('j1', 'succeeded', 'cli', '2025-01-01 00:00:00')"
                )
            )
        legacy.dispose()
        engine = make_engine(make_settings(tmp_path))
        try:
            inspector = sqlalchemy.inspect(engine)
            assert {"audit_log", "audit_head", "api_keys", "alembic_version"} <= set(
                inspector.get_table_names()
            )
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT job_id FROM ingest_jobs")) == "j1"
                assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0007"
            log = AuditLog(make_session_factory(engine), key=KEY)
            log.append(AuditEvent.JOB_CREATED, "cli")
            assert log.verify().ok
        finally:
            engine.dispose()


@pytest.mark.integration
def test_ingestion_jobs_and_document_changes_are_audited(
    tmp_path: Path, embedder: Embedder, database_url: str | None
) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    rule = docs / "rule.md"
    rule.write_text("# Rule\n\nA firm must keep records for six years.\n")
    settings = make_settings(tmp_path / "data", database_url=database_url)
    with services_for(settings, embedder) as services:
        ingestor = services.ingestor()
        first = ingestor.run([rule], requested_by="key:admin1")
        rule.write_text("# Rule\n\nA firm must keep records for seven years.\n")
        ingestor.run([rule], requested_by="key:admin1")
        ingestor.run([rule], requested_by="key:admin1")  # unchanged: no document row
        assert ingestor.delete("rule", actor="key:admin2")
        assert not ingestor.delete("rule", actor="key:admin2")  # nothing left: nothing audited
        entries = list(services.audit.export())
        assert services.audit.verify().ok
    assert [(e.event, e.actor, e.target) for e in entries] == [
        ("ingest.job_created", "key:admin1", first.job_id),
        ("document.added", "key:admin1", "rule"),
        ("ingest.job_finished", "key:admin1", first.job_id),
        ("ingest.job_created", "key:admin1", entries[3].target),
        ("document.replaced", "key:admin1", "rule"),
        ("ingest.job_finished", "key:admin1", entries[3].target),
        ("ingest.job_created", "key:admin1", entries[6].target),
        ("ingest.job_finished", "key:admin1", entries[6].target),
        ("document.deleted", "key:admin2", "rule"),
    ]
    replaced = entries[4].detail
    assert (
        replaced["previous_hash"] == entries[1].detail["content_hash"] != replaced["content_hash"]
    )
    assert entries[2].detail["status"] == "succeeded"
    assert entries[2].detail["counts"]["ingested"] == 1
