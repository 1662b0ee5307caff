"""The audit trail (admins): browse, verify, export as JSON lines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from api.deps import AdminPrincipal, AuditDep
from api.pagination import Page, Pagination
from core.audit import AuditEntry, AuditEvent, VerifyReport

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """Times without a zone are UTC, as the log keeps them."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=dt.UTC)


@router.get("", operation_id="list_audit_entries")
def list_entries(
    audit: AuditDep,
    _admin: AdminPrincipal,
    page: Pagination,
    event: Annotated[AuditEvent | None, Query(description="Only this kind of event.")] = None,
    actor: Annotated[str | None, Query(description="Only this principal's rows.")] = None,
) -> Page[AuditEntry]:
    """Audit rows, newest first."""
    items, total = audit.entries(page.limit, page.offset, event, actor)
    return page.page(items, total)


@router.get("/verify", operation_id="verify_audit_log")
def verify(audit: AuditDep, _admin: AdminPrincipal) -> VerifyReport:
    """Check the hash chain; names the first row that was edited or deleted."""
    return audit.verify()


@router.get(
    "/export",
    operation_id="export_audit_log",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}, "description": "JSON lines"}},
)
def export(
    audit: AuditDep,
    _admin: AdminPrincipal,
    since: Annotated[
        dt.datetime | None, Query(description="From this time (UTC if no zone).")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="Before this time.")] = None,
) -> StreamingResponse:
    """Rows in [since, until), oldest first, one JSON object per line."""

    def lines() -> Iterator[str]:
        for entry in audit.export(_utc(since), _utc(until)):
            yield entry.model_dump_json() + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
