from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status

from api.deps import AdminPrincipal, CatalogDep, CurrentPrincipal, IngestorDep
from api.errors import ApiError
from api.pagination import Page, Pagination
from api.schemas import DocumentOut, ErrorResponse
from core.catalog import DocumentRecord
from core.models import Principal

router = APIRouter(prefix="/v1/documents", tags=["documents"])


def _visible(record: DocumentRecord, principal: Principal) -> bool:
    return bool(set(record.access_groups) & set(principal.groups))


@router.get("", operation_id="list_documents")
def list_documents(
    catalog: CatalogDep,
    principal: CurrentPrincipal,
    pagination: Pagination,
) -> Page[DocumentOut]:
    """The documents the caller may read, by id."""
    visible = [DocumentOut.from_record(r) for r in catalog.documents() if _visible(r, principal)]
    return pagination.slice(visible)


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such document (or not visible)"}
}


@router.get("/{document_id}", operation_id="get_document", responses=_NOT_FOUND)
def get_document(document_id: str, catalog: CatalogDep, principal: CurrentPrincipal) -> DocumentOut:
    record = catalog.document(document_id)
    if record is None or not _visible(record, principal):  # never reveal what exists
        raise ApiError(404, "not_found", f"no document {document_id!r}")
    return DocumentOut.from_record(record)


@router.delete(
    "/{document_id}",
    operation_id="delete_document",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_NOT_FOUND,
)
def delete_document(document_id: str, ingestor: IngestorDep, admin: AdminPrincipal) -> None:
    """Remove a document and every chunk of it (admins)."""
    if not ingestor.delete(document_id, actor=admin.subject):
        raise ApiError(404, "not_found", f"no document {document_id!r}")
