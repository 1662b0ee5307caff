"""Saved answers: research kept as memos, re-checked whenever a document they cite changes.

A saved answer keeps its own copy of the question, the answer, its parts and, per citation, the
document version (content hash), the section and the exact cited text (the passage, and the quote
that backs the answer). When ingestion stores a new version of a document, or deletes it,
`SavedAnswers.document_changed` compares every saved citation of it with the document as it is now:

- unchanged: the cited words are still in the same section;
- moved: the same words are now in another section;
- changed: the section (or another) holds a close version of them: a word-level diff is kept;
- gone: nothing close is left.

A saved answer with a changed or gone citation is marked `needs_review`, with the reasons. The
comparison always starts from the saved text, and an answer is touched only when a citation's
result differs from the last one: checking the same version twice flags nothing, and an answer
marked reviewed stays reviewed until a later version changes what its citations show.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship, selectinload, sessionmaker

from core.audit import AuditEvent, AuditRow
from core.db import Base, UTCDateTime
from core.models import Chunk, Principal

# Share of the cited words a section must still hold, in order, for the citation to count as
# changed rather than gone.
CLOSE_MATCH = 0.5


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SavedStatus(enum.StrEnum):
    CURRENT = "current"  # every citation reads as it did when saved (or only moved)
    NEEDS_REVIEW = "needs_review"  # a cited passage changed or is gone
    REVIEWED = "reviewed"  # an analyst looked at the changes since


class CitationStatus(enum.StrEnum):
    UNCHANGED = "unchanged"
    MOVED = "moved"
    CHANGED = "changed"
    GONE = "gone"


class SavedAnswerError(Exception):
    """A saved-answer request that cannot be done, with the HTTP status and code it maps to."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# tables


class SavedAnswerRow(Base):
    __tablename__ = "saved_answers"

    saved_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(Text)
    notes: Mapped[str] = mapped_column(Text)
    question: Mapped[str] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    parts: Mapped[list[Any]] = mapped_column(JSON)
    query_id: Mapped[int] = mapped_column(Integer)
    model: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    reasons: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    citations: Mapped[list[SavedCitationRow]] = relationship(
        order_by="SavedCitationRow.n", cascade="all, delete-orphan"
    )
    shares: Mapped[list[SavedShareRow]] = relationship(cascade="all, delete-orphan")


class SavedCitationRow(Base):
    __tablename__ = "saved_citations"
    __table_args__ = (Index("ix_saved_citations_document_id", "document_id"),)

    saved_id: Mapped[str] = mapped_column(
        ForeignKey("saved_answers.saved_id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[str] = mapped_column(String(200))
    document_title: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    section: Mapped[str] = mapped_column(Text)
    section_path: Mapped[str] = mapped_column(Text)
    page: Mapped[int | None] = mapped_column(Integer)
    chunk_id: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    quote: Mapped[str] = mapped_column(Text)
    access_groups: Mapped[list[str]] = mapped_column(JSON)
    check_status: Mapped[str] = mapped_column(String(16))
    checked_hash: Mapped[str | None] = mapped_column(String(64))
    now_section: Mapped[str | None] = mapped_column(Text)
    now_text: Mapped[str | None] = mapped_column(Text)
    diff: Mapped[list[dict[str, str]]] = mapped_column(JSON)


class SavedShareRow(Base):
    """One group a saved answer is shared with."""

    __tablename__ = "saved_shares"
    __table_args__ = (Index("ix_saved_shares_group", "group_name"),)

    saved_id: Mapped[str] = mapped_column(
        ForeignKey("saved_answers.saved_id", ondelete="CASCADE"), primary_key=True
    )
    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)


# views


class DiffSegment(BaseModel):
    op: str = Field(description="equal, delete (only in the saved text) or insert (only now).")
    text: str


class CitationCheck(BaseModel):
    """How a citation reads in the document's current version."""

    status: CitationStatus
    checked_version: str | None = Field(
        default=None, description="The content hash compared with (null: not re-checked yet)."
    )
    section: str | None = Field(
        default=None, description="Where the text is now (moved or changed), by heading path."
    )
    text: str | None = Field(default=None, description="The passage as it reads now (changed).")
    diff: list[DiffSegment] = Field(
        default_factory=list, description="Word-level diff, saved text to current (changed)."
    )


class SavedCitation(BaseModel):
    n: int
    document_id: str
    document_title: str
    version: str = Field(description="Content hash of the document version cited.")
    section: str
    section_path: str
    page: int | None = None
    chunk_id: str
    text: str = Field(description="The cited passage, exactly as it read.")
    quote: str = Field(description="The span of it that backs the answer.")
    access_groups: list[str] = Field(description="The document's groups when it was saved.")
    check: CitationCheck = Field(
        default_factory=lambda: CitationCheck(status=CitationStatus.UNCHANGED)
    )


class SavedAnswer(BaseModel):
    saved_id: str
    owner: str
    title: str
    notes: str
    question: str
    answer: str
    parts: list[Any] = Field(default_factory=list)
    query_id: int = Field(description="The audit row of the query that produced the answer.")
    model: str | None = None
    shared_with: list[str] = Field(default_factory=list)
    status: SavedStatus
    reasons: list[str] = Field(default_factory=list, description="Why it needs review.")
    created_at: dt.datetime
    checked_at: dt.datetime | None = None
    reviewed_at: dt.datetime | None = None
    reviewed_by: str | None = None
    citations: list[SavedCitation]

    @property
    def document_ids(self) -> set[str]:
        return {citation.document_id for citation in self.citations}


@dataclass(frozen=True)
class AnsweredQuery:
    """What the audit log kept of one answered query."""

    query_id: int
    actor: str
    time: dt.datetime
    question: str
    answer: str
    model: str | None
    parts: list[Any]
    chunk_ids: list[str]
    citations: list[dict[str, Any]]


def _citation_view(row: SavedCitationRow) -> SavedCitation:
    return SavedCitation(
        n=row.n,
        document_id=row.document_id,
        document_title=row.document_title,
        version=row.content_hash,
        section=row.section,
        section_path=row.section_path,
        page=row.page,
        chunk_id=row.chunk_id,
        text=row.text,
        quote=row.quote,
        access_groups=list(row.access_groups),
        check=CitationCheck(
            status=CitationStatus(row.check_status),
            checked_version=row.checked_hash,
            section=row.now_section,
            text=row.now_text,
            diff=[DiffSegment.model_validate(d) for d in row.diff or []],
        ),
    )


def _view(row: SavedAnswerRow) -> SavedAnswer:
    return SavedAnswer(
        saved_id=row.saved_id,
        owner=row.owner,
        title=row.title,
        notes=row.notes,
        question=row.question,
        answer=row.answer,
        parts=list(row.parts or []),
        query_id=row.query_id,
        model=row.model,
        shared_with=sorted(share.group_name for share in row.shares),
        status=SavedStatus(row.status),
        reasons=list(row.reasons or []),
        created_at=row.created_at,
        checked_at=row.checked_at,
        reviewed_at=row.reviewed_at,
        reviewed_by=row.reviewed_by,
        citations=[_citation_view(c) for c in row.citations],
    )


# the access rule


def readable_by(
    answer: SavedAnswer, principal: Principal, document_groups: dict[str, list[str]]
) -> bool:
    """Whether `principal` may see `answer`: they own it or share a group it is shared with,
    and they may read every document it cites (by the document's groups now, or, once it is
    deleted, its groups when the answer was saved). The answer text is drawn from every cited
    passage, so one unreadable citation hides the whole saved answer, from its owner too."""
    groups = set(principal.groups)
    if answer.owner != principal.subject and not groups & set(answer.shared_with):
        return False
    return all(
        groups & set(document_groups.get(citation.document_id, citation.access_groups))
        for citation in answer.citations
    )


# change detection


def _words(text: str) -> list[str]:
    return text.split()


def _merge_overlap(merged: list[str], following: list[str]) -> list[str]:
    """Consecutive chunks of a section overlap (chunk_overlap): the repeated words once."""
    for size in range(min(len(merged), len(following)), 0, -1):
        if merged[-size:] == following[:size]:
            return merged + following[size:]
    return merged + following


def _contains(haystack: str, needle: list[str]) -> bool:
    return f" {' '.join(needle)} " in haystack


class DocumentVersion:
    """One version of a document's text, section by section, ready to look cited words up in."""

    def __init__(self, content_hash: str | None, chunks: Sequence[Chunk]) -> None:
        self.content_hash = content_hash
        words: dict[str, list[str]] = {}
        for chunk in chunks:  # in document order, as the chunker made them
            words[chunk.section] = _merge_overlap(words.get(chunk.section, []), _words(chunk.text))
        self.sections = words
        self._joined = {section: f" {' '.join(w)} " for section, w in words.items()}
        self._vocabulary = {section: set(w) for section, w in words.items()}
        self._checked: dict[tuple[str, str, str], CitationCheck] = {}

    def check(self, citation: SavedCitationRow) -> CitationCheck:
        """Where the citation's saved text stands in this version."""
        if self.content_hash == citation.content_hash:
            return CitationCheck(status=CitationStatus.UNCHANGED)
        # Saved answers cite the same passages over and over: each is looked up once.
        key = (citation.content_hash, citation.section, citation.text)
        if key not in self._checked:
            self._checked[key] = self._look_up(citation)
        return self._checked[key]

    def _look_up(self, citation: SavedCitationRow) -> CitationCheck:
        cited = _words(citation.text)
        here = self._joined.get(citation.section)
        if here is not None and _contains(here, cited):
            return CitationCheck(status=CitationStatus.UNCHANGED)
        for section, joined in self._joined.items():
            if section != citation.section and _contains(joined, cited):
                return CitationCheck(status=CitationStatus.MOVED, section=section)
        return self._closest(citation.section, cited)

    def _closest(self, section: str, cited: list[str]) -> CitationCheck:
        """The section holding most of the cited words in order, the cited one first on ties."""
        vocabulary = set(cited)
        enough = CLOSE_MATCH * len(vocabulary)
        # Only sections sharing enough distinct words can hold enough of them in order: the
        # alignment (quadratic) runs on those few.
        candidates = sorted(
            (s for s, known in self._vocabulary.items() if len(vocabulary & known) >= enough),
            key=lambda s: s != section,
        )
        best: tuple[float, str, list[DiffSegment], str] | None = None
        for candidate in candidates:
            share, diff, text = _aligned(cited, self.sections[candidate])
            if best is None or share > best[0]:
                best = (share, candidate, diff, text)
        if best is None or best[0] < CLOSE_MATCH:
            return CitationCheck(status=CitationStatus.GONE)
        _, where, diff, text = best
        return CitationCheck(status=CitationStatus.CHANGED, section=where, text=text, diff=diff)


def _aligned(cited: list[str], section: list[str]) -> tuple[float, list[DiffSegment], str]:
    """The share of the cited words found in order in the section, the word-level diff from the
    cited text to the part of the section it corresponds to, and that part's text."""
    matcher = SequenceMatcher(None, cited, section, autojunk=False)
    opcodes = matcher.get_opcodes()
    # The section's words before and after the cited passage are context, not a change.
    while opcodes and opcodes[0][0] == "insert":
        opcodes.pop(0)
    while opcodes and opcodes[-1][0] == "insert":
        opcodes.pop()
    matched = sum(i2 - i1 for op, i1, i2, _, _ in opcodes if op == "equal")
    segments: list[DiffSegment] = []
    for op, i1, i2, j1, j2 in opcodes:
        if op == "equal":
            segments.append(DiffSegment(op="equal", text=" ".join(cited[i1:i2])))
        if op in ("delete", "replace"):
            segments.append(DiffSegment(op="delete", text=" ".join(cited[i1:i2])))
        if op in ("insert", "replace"):
            segments.append(DiffSegment(op="insert", text=" ".join(section[j1:j2])))
    now = " ".join(section[opcodes[0][3] : opcodes[-1][4]]) if opcodes else ""
    return matched / max(len(cited), 1), segments, now


def _reasons(row: SavedAnswerRow) -> list[str]:
    reasons = []
    for citation in row.citations:
        where = f"[{citation.n}] {citation.document_title}, {citation.section_path}"
        if citation.check_status == CitationStatus.CHANGED:
            reasons.append(f"{where}: the cited text changed")
        elif citation.check_status == CitationStatus.GONE:
            reasons.append(f"{where}: the cited text is no longer in the document")
    return reasons


# the store


class SavedAnswers:
    """Saved answers in the SQL store; every method is one short transaction."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def create(
        self,
        owner: str,
        title: str,
        notes: str,
        query: AnsweredQuery,
        citations: list[SavedCitation],
        shared_with: list[str],
    ) -> SavedAnswer:
        row = SavedAnswerRow(
            saved_id=str(uuid.uuid4()),
            owner=owner,
            title=title,
            notes=notes,
            question=query.question,
            answer=query.answer,
            parts=query.parts,
            query_id=query.query_id,
            model=query.model,
            status=SavedStatus.CURRENT.value,
            reasons=[],
            created_at=_now(),
            citations=[
                SavedCitationRow(
                    n=c.n,
                    document_id=c.document_id,
                    document_title=c.document_title,
                    content_hash=c.version,
                    section=c.section,
                    section_path=c.section_path,
                    page=c.page,
                    chunk_id=c.chunk_id,
                    text=c.text,
                    quote=c.quote,
                    access_groups=c.access_groups,
                    check_status=CitationStatus.UNCHANGED.value,
                    diff=[],
                )
                for c in citations
            ],
            shares=[SavedShareRow(group_name=g) for g in sorted(set(shared_with))],
        )
        with self._sessions.begin() as session:
            session.add(row)
            session.flush()
            return _view(row)

    def get(self, saved_id: str) -> SavedAnswer | None:
        with self._sessions() as session:
            row = session.get(SavedAnswerRow, saved_id)
            return _view(row) if row else None

    def visible_to(
        self, principal: Principal, status: SavedStatus | None = None
    ) -> list[SavedAnswer]:
        """The caller's own and those shared with their groups, newest first (before the rule
        on cited documents, which `readable_by` applies)."""
        shared = select(SavedShareRow.saved_id).where(
            SavedShareRow.group_name.in_(principal.groups)
        )
        query = (
            select(SavedAnswerRow)
            .where(
                or_(
                    SavedAnswerRow.owner == principal.subject,
                    SavedAnswerRow.saved_id.in_(shared),
                )
            )
            .options(selectinload(SavedAnswerRow.citations), selectinload(SavedAnswerRow.shares))
            .order_by(SavedAnswerRow.created_at.desc(), SavedAnswerRow.saved_id)
        )
        if status is not None:
            query = query.where(SavedAnswerRow.status == status.value)
        with self._sessions() as session:
            return [_view(row) for row in session.scalars(query)]

    def update(
        self,
        saved_id: str,
        title: str | None = None,
        notes: str | None = None,
        shared_with: list[str] | None = None,
    ) -> SavedAnswer:
        with self._sessions.begin() as session:
            row = session.get_one(SavedAnswerRow, saved_id)
            if title is not None:
                row.title = title
            if notes is not None:
                row.notes = notes
            if shared_with is not None:
                row.shares = [SavedShareRow(group_name=g) for g in sorted(set(shared_with))]
            session.flush()
            return _view(row)

    def mark_reviewed(self, saved_id: str, by: str) -> SavedAnswer:
        with self._sessions.begin() as session:
            row = session.get_one(SavedAnswerRow, saved_id)
            row.status = SavedStatus.REVIEWED.value
            row.reviewed_at, row.reviewed_by = _now(), by
            return _view(row)

    def delete(self, saved_id: str) -> None:
        with self._sessions.begin() as session:
            row = session.get(SavedAnswerRow, saved_id)
            if row is not None:
                session.delete(row)

    # change detection (called by the ingestion job)

    def document_changed(
        self, document_id: str, content_hash: str | None, chunks: Sequence[Chunk]
    ) -> list[str]:
        """Re-check every saved citation of `document_id` against its new version (None and no
        chunks: it was deleted); the ids of the saved answers this newly flagged for review.

        Only the citations are loaded; an answer is loaded when one of its citations now reads
        differently than at the last check, to set its status and reasons.
        """
        version = DocumentVersion(content_hash, chunks)
        of_document = SavedCitationRow.document_id == document_id
        with self._sessions.begin() as session:
            touched = {
                citation.saved_id
                for citation in session.scalars(select(SavedCitationRow).where(of_document))
                if _recheck(citation, version)
            }
            session.flush()
            session.execute(
                update(SavedCitationRow)
                .where(of_document)
                .values(checked_hash=content_hash)
                .execution_options(synchronize_session=False)
            )
            session.execute(
                update(SavedAnswerRow)
                .where(
                    SavedAnswerRow.saved_id.in_(
                        select(SavedCitationRow.saved_id).where(of_document)
                    )
                )
                .values(checked_at=_now())
                .execution_options(synchronize_session=False)
            )
            flagged = []
            answers = session.scalars(
                select(SavedAnswerRow)
                .where(SavedAnswerRow.saved_id.in_(touched))
                .options(selectinload(SavedAnswerRow.citations))
                .order_by(SavedAnswerRow.saved_id)
            )
            for answer in answers:
                answer.reasons = _reasons(answer)
                answer.status = (
                    SavedStatus.NEEDS_REVIEW if answer.reasons else SavedStatus.CURRENT
                ).value
                if answer.reasons:
                    flagged.append(answer.saved_id)
        return flagged

    # reading the audit log

    def answered_query(self, query_id: int) -> AnsweredQuery | None:
        """The audit row of an answered query (None: no such row, not a query, or not answered)."""
        with self._sessions() as session:
            row = session.get(AuditRow, query_id)
        if row is None or row.event != AuditEvent.QUERY.value or row.answer is None:
            return None
        detail = row.detail or {}
        return AnsweredQuery(
            query_id=row.id,
            actor=row.actor,
            time=row.time,
            question=row.question or "",
            answer=row.answer,
            model=row.model,
            parts=list(detail.get("parts") or []),
            chunk_ids=list(detail.get("chunk_ids") or []),
            citations=list(detail.get("citations") or []),
        )

    def versions_at(self, document_ids: set[str], query_id: int) -> dict[str, str]:
        """The content hash each document had when the query ran, from the ingestion rows of
        the audit log before it (a document ingested before the log began is missing)."""
        events = [AuditEvent.DOCUMENT_ADDED.value, AuditEvent.DOCUMENT_REPLACED.value]
        with self._sessions() as session:
            rows = session.execute(
                select(AuditRow.target, AuditRow.detail)
                .where(
                    AuditRow.id < query_id,
                    AuditRow.event.in_(events),
                    AuditRow.target.in_(document_ids),
                )
                .order_by(AuditRow.id)
            )
            return {target: detail["content_hash"] for target, detail in rows.tuples()}


def _recheck(citation: SavedCitationRow, version: DocumentVersion) -> bool:
    """Check one citation; True when it now reads differently than at the last check."""
    check = version.check(citation)
    new = (check.status.value, check.section, check.text)
    if new == (citation.check_status, citation.now_section, citation.now_text):
        return False
    citation.check_status, citation.now_section, citation.now_text = new
    citation.diff = [segment.model_dump() for segment in check.diff]
    return True
