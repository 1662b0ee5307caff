"""Saving answers and reading them back, for the API and the CLI alike: who may do what, and the
audit row of each step.

A saved answer is built from the query's audit row (question and answer as the log keeps them:
personal data redacted when REGULUS_AUDIT_REDACT_PII is on) and the cited chunks in the store,
which must still be the version the answer was given from.
"""

from __future__ import annotations

from api.memo import MemoFormat, memo
from api.services import Services
from core.audit import AuditEvent, AuditLog
from core.catalog import Catalog, DocumentRecord
from core.models import Principal, RetrievedChunk
from core.saved import (
    AnsweredQuery,
    SavedAnswer,
    SavedAnswerError,
    SavedAnswers,
    SavedCitation,
    SavedStatus,
    readable_by,
)
from generation.citations import citations_for
from retrieval.store import VectorStore


class SavedResearch:
    """Saved answers as one caller sees them (the access rule is `core.saved.readable_by`)."""

    def __init__(
        self, saved: SavedAnswers, catalog: Catalog, store: VectorStore, audit: AuditLog
    ) -> None:
        self._saved = saved
        self._catalog = catalog
        self._store = store
        self._audit = audit

    @classmethod
    def of(cls, services: Services) -> SavedResearch:
        return cls(services.saved, services.catalog, services.store, services.audit)

    def save(
        self,
        principal: Principal,
        query_id: int,
        title: str,
        notes: str = "",
        shared_with: list[str] | None = None,
    ) -> SavedAnswer:
        """Keep one of the caller's answered queries; 404 for another's, 409 when its documents
        changed since (the answer would no longer match what it cites)."""
        shared = _clean_groups(shared_with or [])
        _check_own_groups(principal, shared)
        query = self._saved.answered_query(query_id)
        if query is None or query.actor != principal.subject:
            raise SavedAnswerError(404, "not_found", f"no answered query {query_id} of yours")
        if not query.citations:
            raise SavedAnswerError(
                409, "nothing_cited", f"query {query_id} cites no passage (it was not answered)"
            )
        citations = self._citations(query, principal)
        answer = self._saved.create(principal.subject, title, notes, query, citations, shared)
        self._record(
            AuditEvent.SAVED_CREATED,
            principal,
            answer,
            query_id=query_id,
            versions={c.document_id: c.version for c in citations},
            shared_with=shared,
        )
        return answer

    def _citations(self, query: AnsweredQuery, principal: Principal) -> list[SavedCitation]:
        document_ids = {c["document_id"] for c in query.citations}
        asked_on = self._saved.versions_at(document_ids, query.query_id)
        records: dict[str, DocumentRecord] = {}
        for document_id in document_ids:
            record = self._catalog.document(document_id)
            if record is None:
                raise SavedAnswerError(
                    409, "document_changed", f"{document_id!r} is no longer indexed: ask again"
                )
            if not set(record.access_groups) & set(principal.groups):
                raise SavedAnswerError(
                    404, "not_found", f"no answered query {query.query_id} of yours"
                )
            records[document_id] = record
            if asked_on.get(document_id, record.content_hash) != record.content_hash:
                raise SavedAnswerError(
                    409,
                    "document_changed",
                    f"{document_id!r} changed since query {query.query_id}: ask again and save "
                    "the new answer",
                )
        chunks = {chunk.chunk_id: chunk for d in document_ids for chunk in self._store.chunks(d)}
        cited = {c["n"]: c for c in query.citations}
        missing = [c["chunk_id"] for c in cited.values() if c["chunk_id"] not in chunks]
        if missing:
            raise SavedAnswerError(
                409, "document_changed", f"cited passages are gone from the index: {missing}"
            )
        # The quote backing each citation, found again as the pipeline found it (from the answer
        # sentence that cites the passage).
        passages = [
            RetrievedChunk(chunk=chunks[chunk_id], score=0.0)
            for chunk_id in query.chunk_ids
            if chunk_id in chunks
        ]
        quotes = {c.n: c.quote for c in citations_for(query.answer, passages)}
        saved = []
        for n, citation in sorted(cited.items()):
            chunk = chunks[citation["chunk_id"]]
            saved.append(
                SavedCitation(
                    n=n,
                    document_id=chunk.document_id,
                    document_title=chunk.document_title,
                    version=chunk.content_hash,
                    section=chunk.section,
                    section_path=chunk.section_path or chunk.section,
                    page=chunk.page,
                    chunk_id=chunk.chunk_id,
                    text=chunk.text,
                    quote=quotes.get(n, chunk.text),
                    access_groups=list(records[chunk.document_id].access_groups),
                )
            )
        return saved

    def visible(self, principal: Principal, status: SavedStatus | None = None) -> list[SavedAnswer]:
        groups = self._document_groups()
        visible = [
            answer
            for answer in self._saved.visible_to(principal, status)
            if readable_by(answer, principal, groups)
        ]
        self._audit.append(
            AuditEvent.SAVED_LISTED,
            principal.subject,
            role=principal.role.value,
            detail={"status": status.value if status else None, "count": len(visible)},
        )
        return visible

    def get(self, principal: Principal, saved_id: str) -> SavedAnswer:
        answer = self._readable(principal, saved_id)
        self._record(AuditEvent.SAVED_READ, principal, answer)
        return answer

    def export(self, principal: Principal, saved_id: str, format: MemoFormat) -> str:
        answer = self._readable(principal, saved_id)
        self._record(AuditEvent.SAVED_EXPORTED, principal, answer, format=format.value)
        return memo(answer, format)

    def update(
        self,
        principal: Principal,
        saved_id: str,
        title: str | None = None,
        notes: str | None = None,
        shared_with: list[str] | None = None,
    ) -> SavedAnswer:
        """Retitle, annotate or (re)share: the owner only."""
        self._owned(principal, saved_id)
        shared = None if shared_with is None else _clean_groups(shared_with)
        if shared is not None:
            _check_own_groups(principal, shared)
        answer = self._saved.update(saved_id, title, notes, shared)
        self._record(
            AuditEvent.SAVED_UPDATED,
            principal,
            answer,
            title=title is not None,
            notes=notes is not None,
            shared_with=shared,
        )
        return answer

    def review(self, principal: Principal, saved_id: str) -> SavedAnswer:
        """Mark the changes seen: whoever may read the saved answer."""
        before = self._readable(principal, saved_id)
        answer = self._saved.mark_reviewed(saved_id, principal.subject)
        self._record(AuditEvent.SAVED_REVIEWED, principal, answer, reasons=before.reasons)
        return answer

    def delete(self, principal: Principal, saved_id: str) -> None:
        answer = self._owned(principal, saved_id)
        self._saved.delete(saved_id)
        self._record(AuditEvent.SAVED_DELETED, principal, answer)

    def _document_groups(self) -> dict[str, list[str]]:
        return {r.document_id: r.access_groups for r in self._catalog.documents()}

    def _readable(self, principal: Principal, saved_id: str) -> SavedAnswer:
        answer = self._saved.get(saved_id)
        if answer is None or not readable_by(answer, principal, self._document_groups()):
            raise SavedAnswerError(404, "not_found", f"no saved answer {saved_id!r}")
        return answer

    def _owned(self, principal: Principal, saved_id: str) -> SavedAnswer:
        answer = self._readable(principal, saved_id)
        if answer.owner != principal.subject:
            raise SavedAnswerError(
                403, "forbidden", "only the owner may change or delete a saved answer"
            )
        return answer

    def _record(
        self, event: AuditEvent, principal: Principal, answer: SavedAnswer, **detail: object
    ) -> None:
        self._audit.append(
            event,
            principal.subject,
            role=principal.role.value,
            target=answer.saved_id,
            detail={"query_id": answer.query_id, "status": answer.status.value, **detail},
        )


def _clean_groups(groups: list[str]) -> list[str]:
    return sorted({g.strip() for g in groups if g.strip()})


def _check_own_groups(principal: Principal, groups: list[str]) -> None:
    """Sharing reaches only groups the owner is in: no one widens an audience they are not in."""
    foreign = sorted(set(groups) - set(principal.groups))
    if foreign:
        raise SavedAnswerError(
            403, "forbidden", f"you may share only with your own groups, not {foreign}"
        )
