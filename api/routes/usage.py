"""Tokens and cost per principal, summed from the audit log's query rows."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import AdminPrincipal, AuditDep, CurrentPrincipal
from api.pagination import Page, Pagination
from core.audit import UsageTotals

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", operation_id="list_usage")
def list_usage(audit: AuditDep, _admin: AdminPrincipal, page: Pagination) -> Page[UsageTotals]:
    """Every principal's queries, refusals, tokens and cost (admins)."""
    return page.slice(audit.usage())


@router.get("/me", operation_id="my_usage")
def my_usage(audit: AuditDep, principal: CurrentPrincipal) -> UsageTotals:
    """The caller's own totals."""
    mine = audit.usage(principal.subject)
    return (
        mine[0]
        if mine
        else UsageTotals(
            principal=principal.subject,
            queries=0,
            refused=0,
            prompt_tokens=0,
            completion_tokens=0,
            cost_usd=0.0,
        )
    )
