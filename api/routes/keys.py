"""API keys (admins): create, list, revoke."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AdminPrincipal, KeyStoreDep
from api.errors import ApiError
from api.pagination import Page, Pagination
from api.schemas import ErrorResponse, KeyCreate, KeyCreated
from core.auth import ApiKey

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post("", operation_id="create_key", status_code=status.HTTP_201_CREATED)
def create_key(body: KeyCreate, keys: KeyStoreDep, admin: AdminPrincipal) -> KeyCreated:
    """A new API key; the secret is in this response only."""
    key, secret = keys.create(body.role, body.groups, body.name, created_by=admin.subject)
    return KeyCreated(**key.model_dump(exclude={"subject"}), key=secret)


@router.get("", operation_id="list_keys")
def list_keys(keys: KeyStoreDep, _admin: AdminPrincipal, page: Pagination) -> Page[ApiKey]:
    """Every key, revoked ones included, oldest first; never the secrets."""
    return page.page(keys.keys(page.limit, page.offset), keys.count())


@router.delete(
    "/{key_id}",
    operation_id="revoke_key",
    responses={404: {"model": ErrorResponse, "description": "No such key"}},
)
def revoke_key(key_id: str, keys: KeyStoreDep, admin: AdminPrincipal) -> ApiKey:
    """Revoke a key: every later request with it gets 401."""
    key = keys.revoke(key_id, actor=admin.subject)
    if key is None:
        raise ApiError(404, "not_found", f"no key {key_id!r}")
    return key
