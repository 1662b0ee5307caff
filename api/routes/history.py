"""The caller's own past questions and answers (from the audit log)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AuditDep, CurrentPrincipal
from api.pagination import Page, Pagination
from core.audit import HistoryItem

router = APIRouter(prefix="/v1/query", tags=["query"])


@router.get("/history", operation_id="query_history")
def history(audit: AuditDep, principal: CurrentPrincipal, page: Pagination) -> Page[HistoryItem]:
    """Your questions, newest first (as the audit log keeps them: personal data redacted)."""
    items, total = audit.history(principal.subject, page.limit, page.offset)
    return page.page(items, total)
