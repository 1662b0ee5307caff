"""Saved answers in the SQL store (SQLite and PostgreSQL), their access rule, and the change
detection that compares a saved citation with a document's new version."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from core.db import Base, alembic_config, make_session_factory
from core.models import Chunk, Principal
from core.saved import (
    AnsweredQuery,
    CitationStatus,
    DocumentVersion,
    SavedAnswer,
    SavedAnswers,
    SavedCitation,
    SavedCitationRow,
    SavedStatus,
    readable_by,
)

ART_7 = "Article 7 — Itemised billing"
ART_10 = "Article 10 — Exceptions"
ART_11 = "Article 11 — Automatic call forwarding"
BILLS = "1. Subscribers shall have the right to receive non-itemised bills."
FORWARDING = (
    "Member States shall ensure that any subscriber has the possibility, using a simple means "
    "and free of charge, of stopping automatic call forwarding by a third party."
)
EXCEPTIONS = "Member States shall ensure that there are transparent procedures."


def chunk(section: str, text: str, content_hash: str = "v2", ordinal: int = 0) -> Chunk:
    return Chunk(
        chunk_id=f"{section}-{ordinal}",
        document_id="eprivacy",
        document_title="ePrivacy Directive",
        section=section,
        section_path=section,
        text=text,
        source="eprivacy.html",
        content_hash=content_hash,
    )


def citation(n: int, section: str, text: str, document_id: str = "eprivacy") -> SavedCitation:
    return SavedCitation(
        n=n,
        document_id=document_id,
        document_title="ePrivacy Directive",
        version="v1",
        section=section,
        section_path=section,
        chunk_id=f"{section}-0",
        text=text,
        quote=text,
        access_groups=["public"],
    )


def row(section: str, text: str) -> SavedCitationRow:
    return SavedCitationRow(section=section, text=text, content_hash="v1")


class TestDocumentVersion:
    def test_the_same_words_in_the_same_section_are_unchanged(self) -> None:
        version = DocumentVersion("v2", [chunk(ART_7, f"Preface.\n{BILLS}\nMore text.")])
        assert version.check(row(ART_7, BILLS)).status is CitationStatus.UNCHANGED

    def test_the_cited_version_itself_is_unchanged_without_a_lookup(self) -> None:
        assert DocumentVersion("v1", []).check(row(ART_7, BILLS)).status is CitationStatus.UNCHANGED

    def test_words_in_another_section_are_moved(self) -> None:
        version = DocumentVersion("v2", [chunk(ART_10, f"{EXCEPTIONS}\n{FORWARDING}")])
        check = version.check(row(ART_11, FORWARDING))
        assert (check.status, check.section) == (CitationStatus.MOVED, ART_10)

    def test_an_edited_passage_is_changed_with_a_word_level_diff(self) -> None:
        edited = "1. Subscribers shall have the right to receive free non-itemised paper bills."
        version = DocumentVersion("v2", [chunk(ART_7, edited), chunk(ART_10, EXCEPTIONS)])
        check = version.check(row(ART_7, BILLS))
        assert (check.status, check.section, check.text) == (CitationStatus.CHANGED, ART_7, edited)
        assert [(s.op, s.text) for s in check.diff] == [
            ("equal", "1. Subscribers shall have the right to receive"),
            ("insert", "free"),
            ("equal", "non-itemised"),
            ("insert", "paper"),
            ("equal", "bills."),
        ]

    def test_surrounding_text_of_the_section_is_context_not_a_change(self) -> None:
        edited = BILLS.replace("non-itemised", "itemised")
        version = DocumentVersion(
            "v2", [chunk(ART_7, f"New first paragraph.\n{edited}\n2. Later.")]
        )
        check = version.check(row(ART_7, BILLS))
        assert check.status is CitationStatus.CHANGED
        assert check.text == edited
        assert [s.op for s in check.diff] == ["equal", "delete", "insert", "equal"]

    def test_text_with_nothing_close_left_is_gone(self) -> None:
        version = DocumentVersion("v2", [chunk(ART_7, "2. Member States shall apply rules.")])
        assert version.check(row(ART_7, BILLS)).status is CitationStatus.GONE
        assert DocumentVersion(None, []).check(row(ART_7, BILLS)).status is CitationStatus.GONE

    def test_overlapping_chunks_of_a_section_are_read_as_one_text(self) -> None:
        words = FORWARDING.split()
        first, second = " ".join(words[:12]), " ".join(words[8:])  # four words overlap
        version = DocumentVersion(
            "v2", [chunk(ART_11, first, ordinal=0), chunk(ART_11, second, ordinal=1)]
        )
        assert version.sections[ART_11] == words
        assert version.check(row(ART_11, FORWARDING)).status is CitationStatus.UNCHANGED


@pytest.fixture
def saved(engine: Engine) -> SavedAnswers:
    return SavedAnswers(make_session_factory(engine))


def query(query_id: int = 7) -> AnsweredQuery:
    return AnsweredQuery(
        query_id=query_id,
        actor="key:alice",
        time=dt.datetime.now(dt.UTC),
        question="May subscribers refuse itemised bills?",
        answer="“Subscribers shall have the right to receive non-itemised bills.” [1]",
        model="extractive",
        parts=[],
        chunk_ids=[f"{ART_7}-0"],
        citations=[{"n": 1, "chunk_id": f"{ART_7}-0", "document_id": "eprivacy"}],
    )


ALICE = Principal(subject="key:alice", groups=["public", "legal"])
BOB = Principal(subject="key:bob", groups=["public", "legal"])
CAROL = Principal(subject="key:carol", groups=["public"])


class TestSavedAnswers:
    def test_round_trip_share_update_and_delete(self, saved: SavedAnswers) -> None:
        created = saved.create(
            "key:alice", "Itemised bills", "for the billing policy", query(),
            [citation(1, ART_7, BILLS), citation(2, ART_11, FORWARDING)], ["legal"],
        )  # fmt: skip
        stored = saved.get(created.saved_id)
        assert stored == created
        assert (stored.status, stored.query_id, stored.shared_with) == (
            SavedStatus.CURRENT,
            7,
            ["legal"],
        )
        assert [(c.n, c.section, c.text, c.version) for c in stored.citations] == [
            (1, ART_7, BILLS, "v1"),
            (2, ART_11, FORWARDING, "v1"),
        ]
        assert [a.saved_id for a in saved.visible_to(BOB)] == [created.saved_id]  # via legal
        assert saved.visible_to(CAROL) == []
        unshared = saved.update(created.saved_id, title="Bills", shared_with=[])
        assert (unshared.title, unshared.notes, unshared.shared_with) == (
            "Bills",
            "for the billing policy",
            [],
        )
        assert saved.visible_to(BOB) == []
        assert saved.visible_to(ALICE, SavedStatus.NEEDS_REVIEW) == []
        saved.delete(created.saved_id)
        assert saved.get(created.saved_id) is None

    def test_a_change_flags_once_and_review_sticks_until_the_next_change(
        self, saved: SavedAnswers
    ) -> None:
        answer = saved.create(
            "key:alice", "Bills", "", query(),
            [citation(1, ART_7, BILLS), citation(2, ART_11, FORWARDING)], [],
        )  # fmt: skip
        edited = BILLS.replace("non-itemised", "itemised")
        v2 = [chunk(ART_7, edited), chunk(ART_10, f"{EXCEPTIONS}\n{FORWARDING}")]
        assert saved.document_changed("eprivacy", "v2", v2) == [answer.saved_id]
        flagged = saved.get(answer.saved_id)
        assert flagged is not None and flagged.status is SavedStatus.NEEDS_REVIEW
        assert flagged.reasons == [
            f"[1] ePrivacy Directive, {ART_7}: the cited text changed",
        ]
        checks = [
            (c.check.status, c.check.section, c.check.checked_version) for c in flagged.citations
        ]
        assert checks == [
            (CitationStatus.CHANGED, ART_7, "v2"),
            (CitationStatus.MOVED, ART_10, "v2"),
        ]  # fmt: skip
        assert saved.document_changed("eprivacy", "v2", v2) == []  # idempotent
        assert saved.get(answer.saved_id) == flagged.model_copy(
            update={"checked_at": saved.get(answer.saved_id).checked_at}  # type: ignore[union-attr]
        )
        reviewed = saved.mark_reviewed(answer.saved_id, "key:bob")
        assert (reviewed.status, reviewed.reviewed_by) == (SavedStatus.REVIEWED, "key:bob")
        # A new version that leaves the same text: still reviewed, nothing flagged.
        assert saved.document_changed("eprivacy", "v3", [*v2, chunk("Article 20", "New.")]) == []
        assert saved.get(answer.saved_id).status is SavedStatus.REVIEWED  # type: ignore[union-attr]
        # Deleting the document: both citations gone, flagged again.
        assert saved.document_changed("eprivacy", None, []) == [answer.saved_id]
        gone = saved.get(answer.saved_id)
        assert gone is not None and gone.status is SavedStatus.NEEDS_REVIEW
        assert {c.check.status for c in gone.citations} == {CitationStatus.GONE}
        # Restoring the saved version: current again, and not counted as flagged.
        v1 = [chunk(ART_7, BILLS, "v1"), chunk(ART_11, FORWARDING, "v1")]
        assert saved.document_changed("eprivacy", "v1", v1) == []
        assert saved.get(answer.saved_id).status is SavedStatus.CURRENT  # type: ignore[union-attr]

    def test_other_documents_and_answers_are_left_alone(self, saved: SavedAnswers) -> None:
        other = saved.create(
            "key:alice", "GDPR", "", query(), [citation(1, "Article 33", "Notify.", "gdpr")], []
        )
        assert saved.document_changed("eprivacy", None, []) == []
        assert saved.get(other.saved_id).checked_at is None  # type: ignore[union-attr]


def saved_answer(citations: list[SavedCitation], shared_with: list[str]) -> SavedAnswer:
    return SavedAnswer(
        saved_id="s1",
        owner="key:alice",
        title="t",
        notes="",
        question="q",
        answer="a",
        query_id=1,
        shared_with=shared_with,
        status=SavedStatus.CURRENT,
        created_at=dt.datetime.now(dt.UTC),
        citations=citations,
    )


class TestAccessRule:
    def test_owner_or_shared_group_and_every_cited_document_readable(self) -> None:
        board = citation(2, "Minutes", "The board approved it.", "board")
        board.access_groups = ["board"]
        saved = saved_answer([citation(1, ART_7, BILLS), board], shared_with=["legal"])
        insider = Principal(subject="key:dave", groups=["public", "legal", "board"])
        assert readable_by(saved, insider, {})
        assert not readable_by(saved, BOB, {})  # shared with legal, but may not read board
        assert not readable_by(saved, ALICE, {})  # the owner neither
        assert readable_by(saved, ALICE, {"board": ["legal"]})  # the document's groups now count
        assert not readable_by(saved, CAROL, {"board": ["public"]})  # not shared with public


class TestMigration:
    def test_0006_upgrades_downgrades_and_matches_the_models(self, engine: Engine) -> None:
        with engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0005")
        tables = set(sqlalchemy.inspect(engine).get_table_names())
        assert not {"saved_answers", "saved_citations", "saved_shares"} & tables
        columns = sqlalchemy.inspect(engine).get_columns("ingest_job_documents")
        assert "flagged_answers" not in {column["name"] for column in columns}
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "head")
        assert {"saved_answers", "saved_citations", "saved_shares"} <= set(
            sqlalchemy.inspect(engine).get_table_names()
        )
