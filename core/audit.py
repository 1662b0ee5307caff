"""The tamper-evident audit trail: an append-only SQL table whose rows form a keyed hash chain.

Each row stores HMAC-SHA256, under a key kept outside the database (REGULUS_AUDIT_KEY, or a key
file made once in the data folder), of its own canonical JSON including the previous row's hash;
the one `audit_head` row stores the last id and hash. Editing a row breaks its hash, and without
the key nobody can compute the hashes again; deleting one leaves a gap in the ids, and cutting off
the newest rows no longer matches the head: `verify` names the first row that is wrong. A cut tail
with the head moved back to an earlier row needs no key, so the head can be anchored outside the
database: `checkpoint` gives a signed (last id, hash) that `verify(against=...)` holds the log to.
The threat model is in docs/architecture.md.

Appends are serialised (a lock in the process, and the head row's write lock across processes on
SQLite and PostgreSQL alike), so the chain stays one line.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Integer,
    String,
    Text,
    case,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.db import Base, UTCDateTime
from core.models import Answer, Principal, RetrievedChunk, SearchFilters
from core.pii import pii_kinds, redact
from core.settings import Settings

GENESIS = "0" * 64  # the "previous hash" of the first row
AUDIT_KEY_FILE = "audit.key"
MIN_KEY_BYTES = 32
_CHECKPOINT_CONTEXT = "regulus-audit-checkpoint"


class AuditEvent(enum.StrEnum):
    QUERY = "query"
    JOB_CREATED = "ingest.job_created"
    JOB_FINISHED = "ingest.job_finished"
    JOB_RESUMED = "ingest.job_resumed"
    DOCUMENT_ADDED = "document.added"
    DOCUMENT_REPLACED = "document.replaced"
    DOCUMENT_UPDATED = "document.metadata_updated"
    DOCUMENT_DELETED = "document.deleted"
    KEY_CREATED = "key.created"
    KEY_REVOKED = "key.revoked"
    DENIED = "auth.denied"
    SAVED_CREATED = "saved.created"
    SAVED_LISTED = "saved.listed"
    SAVED_READ = "saved.read"
    SAVED_EXPORTED = "saved.exported"
    SAVED_UPDATED = "saved.updated"
    SAVED_REVIEWED = "saved.reviewed"
    SAVED_DELETED = "saved.deleted"
    QUERY_REJECTED = "query.rejected"
    AUDIT_REKEYED = "audit.rekeyed"


class AuditRow(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    time: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    event: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    role: Mapped[str | None] = mapped_column(String(16))
    target: Mapped[str | None] = mapped_column(String(300))
    question: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)
    refused: Mapped[bool | None] = mapped_column(Boolean)
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    cost_usd: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """One row (id 1): the newest entry's id and hash, so that a cut-off tail is noticed."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    last_id: Mapped[int] = mapped_column(Integer)
    last_hash: Mapped[str] = mapped_column(String(64))


class AuditEntry(BaseModel):
    id: int
    time: dt.datetime
    event: str
    actor: str
    role: str | None = None
    target: str | None = None
    question: str | None = None
    answer: str | None = None
    refused: bool | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None
    latency_ms: float | None = None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class HistoryItem(BaseModel):
    id: int
    time: dt.datetime
    question: str
    answer: str
    refused: bool


class UsageTotals(BaseModel):
    principal: str
    queries: int
    refused: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class VerifyReport(BaseModel):
    ok: bool
    checked: int
    first_bad_id: int | None = None
    problem: str | None = None


class Checkpoint(BaseModel):
    """The chain's head at one moment, signed with the audit key: kept outside the database
    (a file, a ticket, a write-once store), it makes any later rewrite up to that row visible."""

    last_id: int
    last_hash: str
    time: dt.datetime
    signature: str

    @staticmethod
    def sign(last_id: int, last_hash: str, time: dt.datetime, key: bytes) -> str:
        message = f"{_CHECKPOINT_CONTEXT}\x1f{last_id}\x1f{last_hash}\x1f"
        message += time.astimezone(dt.UTC).isoformat()
        return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()

    def signed_by(self, key: bytes) -> bool:
        expected = self.sign(self.last_id, self.last_hash, self.time, key)
        return hmac.compare_digest(expected, self.signature)


_HASHED = [name for name in AuditEntry.model_fields if name != "hash"]


def _canonical(entry: dict[str, Any]) -> bytes:
    """The row's canonical JSON (sorted keys, UTC ISO time), previous hash included."""
    fields = {name: entry[name] for name in _HASHED}
    fields["time"] = entry["time"].astimezone(dt.UTC).isoformat()
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def row_hash(entry: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the row's canonical JSON under the audit key."""
    return hmac.new(key, _canonical(entry), hashlib.sha256).hexdigest()


def unkeyed_row_hash(entry: dict[str, Any]) -> str:
    """The plain SHA-256 rows were hashed with before the chain was keyed (read by `rekey`)."""
    return hashlib.sha256(_canonical(entry)).hexdigest()


def load_audit_key(settings: Settings) -> bytes:
    """REGULUS_AUDIT_KEY, else the data folder's key file, made on first use (mode 0600).

    Never stored in the database: whoever can write the database but not read this cannot forge
    rows. Processes sharing one database on several hosts must share REGULUS_AUDIT_KEY.
    """
    if settings.audit_key is not None:
        configured = settings.audit_key.get_secret_value().encode()
        if len(configured) < MIN_KEY_BYTES:
            raise ValueError(
                f"REGULUS_AUDIT_KEY must be at least {MIN_KEY_BYTES} characters "
                "(e.g. `openssl rand -hex 32`)"
            )
        return configured
    path = settings.data_dir / AUDIT_KEY_FILE
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{AUDIT_KEY_FILE}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secrets.token_hex(MIN_KEY_BYTES) + "\n")
        try:
            os.link(draft, path)  # whole or not at all; a concurrent first start keeps its own
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"the audit key file {path} can be read by others (mode {mode:o}): chmod 600 it"
        )
    key = path.read_text(encoding="ascii").strip().encode()
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"the audit key file {path} holds no usable key")
    return key


def _columns(row: AuditRow) -> dict[str, Any]:
    return {name: getattr(row, name) for name in AuditEntry.model_fields}


def _json_safe(value: Any) -> Any:
    """What the JSON column will give back when read, so the hash is computed on that."""
    return json.loads(json.dumps(value, default=str))


class AuditLog:
    """Appends, verifies, lists and exports audit rows; every method is one short transaction."""

    def __init__(
        self, sessions: sessionmaker[Session], *, key: bytes, redact_pii: bool = True
    ) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the audit key must be at least {MIN_KEY_BYTES} bytes")
        self._sessions = sessions
        self._key = key
        self._redact_pii = redact_pii
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, sessions: sessionmaker[Session], settings: Settings) -> AuditLog:
        return cls(sessions, key=load_audit_key(settings), redact_pii=settings.audit_redact_pii)

    def append(
        self,
        event: AuditEvent,
        actor: str,
        role: str | None = None,
        target: str | None = None,
        detail: dict[str, Any] | None = None,
        **columns: Any,
    ) -> int:
        """Write one row at the end of the chain; returns its id."""
        with self._lock, self._sessions.begin() as session:
            # Writing the head row first takes the write lock: SQLite's database lock (waiting its
            # busy timeout), PostgreSQL's row lock (and then it returns the newest committed head);
            # whoever holds it appends, the others wait.
            head = session.execute(
                update(AuditHead)
                .where(AuditHead.id == 1)
                .values(last_id=AuditHead.last_id)
                .returning(AuditHead.last_id, AuditHead.last_hash)
            ).one_or_none()
            if head is None:
                raise RuntimeError("the audit_head row is missing: run the migrations")
            entry: dict[str, Any] = {name: None for name in AuditEntry.model_fields}
            entry.update(columns)
            entry.update(
                id=head.last_id + 1,
                time=dt.datetime.now(dt.UTC),
                event=event.value,
                actor=actor,
                role=role,
                target=target,
                detail=_json_safe(detail or {}),
                prev_hash=head.last_hash,
            )
            entry["hash"] = row_hash(entry, self._key)
            session.add(AuditRow(**entry))
            session.execute(
                update(AuditHead)
                .where(AuditHead.id == 1)
                .values(last_id=entry["id"], last_hash=entry["hash"])
            )
            return int(entry["id"])

    def _text(self, text: str | None) -> str | None:
        return redact(text) if text is not None and self._redact_pii else text

    def _redacted(self, value: Any) -> Any:
        """Every string inside `value` redacted: filters are free text too."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, list):
            return [self._redacted(item) for item in value]
        if isinstance(value, dict):
            return {key: self._redacted(item) for key, item in value.items()}
        return value

    def record_query(
        self,
        principal: Principal,
        question: str,
        filters: SearchFilters | None,
        answer: Answer | None,
        passages: list[RetrievedChunk],
        latency_ms: float,
        error: str | None = None,
    ) -> int:
        """One query, answered or failed (`answer` None with `error`); returns the row id, which
        the response carries as `query_id`. The streaming path calls this too, once it is done."""
        usage = answer.usage if answer else None
        detail: dict[str, Any] = {
            "filters": self._redacted(filters.model_dump(mode="json", exclude_none=True))
            if filters
            else {},
            "chunk_ids": [p.chunk.chunk_id for p in passages],
            "pii_question": pii_kinds(question),
        }
        if answer is not None:
            detail["citations"] = [
                {"n": c.n, "chunk_id": c.chunk_id, "document_id": c.document_id}
                for c in answer.citations
            ]
            detail["support_score"] = answer.support_score
            detail["pii_answer"] = pii_kinds(answer.text)
            # Each part's outcome; its words are the question's, redacted like it.
            detail["parts"] = [
                {
                    "text": self._text(p.text),
                    "status": p.status.value,
                    "documents": p.documents,
                    "passages": p.passages,
                }
                for p in answer.parts
            ]
        if error is not None:
            detail["error"] = error
        return self.append(
            AuditEvent.QUERY,
            principal.subject,
            role=principal.role.value,
            detail=detail,
            question=self._text(question),
            answer=self._text(answer.text) if answer else None,
            refused=answer.refused if answer else None,
            model=answer.model if answer else None,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            cost_usd=usage.cost_usd if usage else None,
            latency_ms=round(latency_ms, 3),
        )

    def record_rejection(
        self,
        principal: Principal | None,
        question: str | None,
        target: str,
        detail: dict[str, Any],
    ) -> int:
        """A question refused before it was answered (prompt injection); redacted as queries are."""
        return self.append(
            AuditEvent.QUERY_REJECTED,
            principal.subject if principal else "unauthenticated",
            role=principal.role.value if principal else None,
            target=target,
            detail=detail | {"pii_question": pii_kinds(question or "")},
            question=self._text(question),
        )

    # reading

    def entries(
        self,
        limit: int = 50,
        offset: int = 0,
        event: str | None = None,
        actor: str | None = None,
    ) -> tuple[list[AuditEntry], int]:
        """A page of rows, newest first, and how many match in all."""
        conditions = []
        if event:
            conditions.append(AuditRow.event == event)
        if actor:
            conditions.append(AuditRow.actor == actor)
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditRow).where(*conditions))
            rows = session.scalars(
                select(AuditRow)
                .where(*conditions)
                .order_by(AuditRow.id.desc())
                .limit(limit)
                .offset(offset)
            )
            return [AuditEntry(**_columns(row)) for row in rows], total or 0

    def export(
        self, since: dt.datetime | None = None, until: dt.datetime | None = None
    ) -> Iterator[AuditEntry]:
        """Rows with since <= time < until, oldest first, read in batches."""
        query = select(AuditRow).order_by(AuditRow.id)
        if since is not None:
            query = query.where(AuditRow.time >= since)
        if until is not None:
            query = query.where(AuditRow.time < until)
        with self._sessions() as session:
            for row in session.scalars(query.execution_options(yield_per=500)):
                yield AuditEntry(**_columns(row))

    def history(
        self, subject: str, limit: int = 50, offset: int = 0
    ) -> tuple[list[HistoryItem], int]:
        """The answered questions of one principal, newest first."""
        mine = (
            AuditRow.event == AuditEvent.QUERY.value,
            AuditRow.actor == subject,
            AuditRow.answer.is_not(None),
        )
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(AuditRow).where(*mine))
            rows = session.scalars(
                select(AuditRow)
                .where(*mine)
                .order_by(AuditRow.id.desc())
                .limit(limit)
                .offset(offset)
            )
            items = [
                HistoryItem(
                    id=row.id,
                    time=row.time,
                    question=row.question or "",
                    answer=row.answer or "",
                    refused=bool(row.refused),
                )
                for row in rows
            ]
            return items, total or 0

    def usage(self, subject: str | None = None) -> list[UsageTotals]:
        """Queries, tokens and cost per principal (or of one), from the query rows."""
        query = (
            select(
                AuditRow.actor,
                func.count(),
                func.sum(case((AuditRow.refused.is_(True), 1), else_=0)),
                func.coalesce(func.sum(AuditRow.prompt_tokens), 0),
                func.coalesce(func.sum(AuditRow.completion_tokens), 0),
                func.coalesce(func.sum(AuditRow.cost_usd), 0.0),
            )
            .where(AuditRow.event == AuditEvent.QUERY.value)
            .group_by(AuditRow.actor)
            .order_by(AuditRow.actor)
        )
        if subject is not None:
            query = query.where(AuditRow.actor == subject)
        with self._sessions() as session:
            return [
                UsageTotals(
                    principal=actor,
                    queries=queries,
                    refused=int(refused or 0),
                    prompt_tokens=int(prompt),
                    completion_tokens=int(completion),
                    cost_usd=float(cost),
                )
                for actor, queries, refused, prompt, completion, cost in session.execute(query)
            ]

    def verify(self, against: Checkpoint | None = None) -> VerifyReport:
        """Walk the chain from the first row; the first row that does not fit is named.

        With a checkpoint, the log must also still hold the checkpointed row with its hash.
        """
        if against is not None and not against.signed_by(self._key):
            return VerifyReport(
                ok=False,
                checked=0,
                problem="the checkpoint's signature does not match the audit key: it was "
                "edited, or made with another key",
            )
        return self._walk(against)[0]

    def checkpoint(self) -> Checkpoint:
        """The verified head, signed; raises ValueError when the chain does not verify."""
        report, last_id, last_hash = self._walk(None)
        if not report.ok:
            raise ValueError(
                f"the audit log is broken at row {report.first_bad_id}: {report.problem}"
            )
        now = dt.datetime.now(dt.UTC)
        return Checkpoint(
            last_id=last_id,
            last_hash=last_hash,
            time=now,
            signature=Checkpoint.sign(last_id, last_hash, now, self._key),
        )

    def _walk(self, against: Checkpoint | None) -> tuple[VerifyReport, int, str]:
        expected_id, expected_prev, checked = 1, GENESIS, 0

        def broken(row_id: int, problem: str) -> tuple[VerifyReport, int, str]:
            report = VerifyReport(ok=False, checked=checked, first_bad_id=row_id, problem=problem)
            return report, expected_id - 1, expected_prev

        with self._sessions() as session:
            rows = session.scalars(
                select(AuditRow).order_by(AuditRow.id).execution_options(yield_per=1000)
            )
            for row in rows:
                if row.id != expected_id:
                    return broken(expected_id, f"row {expected_id} is missing (deleted)")
                if row.prev_hash != expected_prev:
                    return broken(
                        row.id,
                        f"row {row.id} does not chain to row {row.id - 1} (which was altered or "
                        "replaced)",
                    )
                if not hmac.compare_digest(row_hash(_columns(row), self._key), row.hash):
                    return broken(row.id, self._hash_problem(row))
                if (
                    against is not None
                    and row.id == against.last_id
                    and not hmac.compare_digest(row.hash, against.last_hash)
                ):
                    return broken(
                        row.id,
                        f"row {row.id} is not the one the checkpoint of "
                        f"{against.time:%Y-%m-%d %H:%M} recorded: rows up to it were rewritten",
                    )
                expected_id, expected_prev, checked = row.id + 1, row.hash, checked + 1
            head = session.get(AuditHead, 1)
        last = expected_id - 1
        if head is None or (head.last_id, head.last_hash) != (last, expected_prev):
            return broken(
                expected_id,
                f"the log ends at row {last} but the head records row "
                f"{head.last_id if head else '?'}: rows from {expected_id} on were deleted (or "
                "the head was altered)",
            )
        if against is not None and last < against.last_id:
            return broken(
                expected_id,
                f"the log ends at row {last} but the checkpoint of "
                f"{against.time:%Y-%m-%d %H:%M} recorded row {against.last_id}: rows from "
                f"{expected_id} on were deleted",
            )
        return VerifyReport(ok=True, checked=checked), last, expected_prev

    def _hash_problem(self, row: AuditRow) -> str:
        if hmac.compare_digest(unkeyed_row_hash(_columns(row)), row.hash):
            return (
                f"row {row.id} is hashed without the audit key: written before the chain was "
                "keyed (if the log verified then, adopt it once with `regulus audit rekey`), "
                "or rewritten by someone without the key"
            )
        return f"row {row.id} was edited: its content no longer matches its keyed hash"

    def rekey(self) -> VerifyReport:
        """Adopt a chain hashed before the key existed: check it (unkeyed rows only before the
        first keyed one, every link and the head), then hash every row again under the key, in
        one transaction; audited. A chain that does not check is left as it is."""
        with self._lock, self._sessions.begin() as session:
            session.execute(  # the head's write lock: no append meanwhile
                update(AuditHead).where(AuditHead.id == 1).values(last_id=AuditHead.last_id)
            )
            rows = list(session.scalars(select(AuditRow).order_by(AuditRow.id)))
            head = session.get(AuditHead, 1)
            expected_prev, unkeyed, keyed_seen = GENESIS, 0, False
            for expected_id, row in enumerate(rows, start=1):
                problem = None
                if row.id != expected_id:
                    problem = f"row {expected_id} is missing (deleted)"
                elif row.prev_hash != expected_prev:
                    problem = f"row {row.id} does not chain to row {row.id - 1}"
                elif hmac.compare_digest(row_hash(_columns(row), self._key), row.hash):
                    keyed_seen = True
                elif not keyed_seen and unkeyed_row_hash(_columns(row)) == row.hash:
                    unkeyed += 1
                else:
                    problem = f"row {row.id} was edited: its content does not match its hash"
                if problem:
                    return VerifyReport(
                        ok=False, checked=expected_id - 1, first_bad_id=expected_id, problem=problem
                    )
                expected_prev = row.hash
            if head is None or (head.last_id, head.last_hash) != (len(rows), expected_prev):
                return VerifyReport(
                    ok=False,
                    checked=len(rows),
                    first_bad_id=len(rows) + 1,
                    problem="the head does not match the last row: rows were deleted",
                )
            previous = GENESIS
            for row in rows:
                row.prev_hash = previous
                row.hash = previous = row_hash(_columns(row), self._key)
            head.last_hash = previous
        if unkeyed:
            self.append(
                AuditEvent.AUDIT_REKEYED,
                "rekey",
                detail={"rows": len(rows), "unkeyed_rows": unkeyed},
            )
        return VerifyReport(ok=True, checked=len(rows))
