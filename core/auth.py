"""Who is calling: API keys (kept only as hashes) and OIDC/JWT bearer tokens, both resolved to a
`Principal` with a role and groups."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import jwt
from pydantic import BaseModel, computed_field
from sqlalchemy import JSON, Index, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from core.audit import AuditEvent, AuditLog
from core.db import Base, UTCDateTime
from core.models import Principal, Role
from core.settings import Settings

KEY_PREFIX = "rk_"
_ROLE_RANK = {Role.ANALYST: 0, Role.EVALUATOR: 1, Role.ADMIN: 2}


class AuthError(Exception):
    """The credentials are missing, malformed, unknown, revoked or expired (HTTP 401)."""


class ApiKeyRow(Base):
    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_key_hash", "key_hash", unique=True),)

    key_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    groups: Mapped[list[str]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ApiKey(BaseModel):
    """A key as listed: never the secret, only its first characters to recognise it by."""

    key_id: str
    name: str
    prefix: str
    role: Role
    groups: list[str]
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def subject(self) -> str:
        """The principal name its holder has in the audit log and usage."""
        return key_subject(self.key_id)


def key_subject(key_id: str) -> str:
    """The principal name of a key's holder, as audit rows and history record it."""
    return f"key:{key_id}"


def hash_key(secret: str) -> str:
    """Keys carry 256 random bits: one unsalted SHA-256 makes a stolen table useless."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _view(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        key_id=row.key_id,
        name=row.name,
        prefix=row.prefix,
        role=Role(row.role),
        groups=list(row.groups),
        created_by=row.created_by,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


class KeyStore:
    """API keys in the SQL store; creating and revoking one is audited."""

    def __init__(self, sessions: sessionmaker[Session], audit: AuditLog) -> None:
        self._sessions = sessions
        self._audit = audit

    def create(
        self, role: Role, groups: list[str], name: str = "", created_by: str = "cli"
    ) -> tuple[ApiKey, str]:
        """A new key and its secret: the only time the secret exists outside the caller's hands."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = uuid.uuid4().hex[:12]
        row = ApiKeyRow(
            key_id=key_id,
            name=name or key_id,
            prefix=secret[:8],
            key_hash=hash_key(secret),
            role=role.value,
            groups=sorted({g.strip() for g in groups if g.strip()}),
            created_by=created_by,
            created_at=dt.datetime.now(dt.UTC),
            revoked_at=None,
        )
        with self._sessions.begin() as session:
            session.add(row)
        key = _view(row)
        self._audit.append(
            AuditEvent.KEY_CREATED,
            created_by,
            target=key_id,
            detail={"name": key.name, "role": key.role.value, "groups": key.groups},
        )
        return key, secret

    def get(self, key_id: str) -> ApiKey | None:
        with self._sessions() as session:
            row = session.get(ApiKeyRow, key_id)
            return _view(row) if row else None

    def keys(self, limit: int | None = None, offset: int = 0) -> list[ApiKey]:
        with self._sessions() as session:
            query = select(ApiKeyRow).order_by(ApiKeyRow.created_at, ApiKeyRow.key_id)
            return [_view(row) for row in session.scalars(query.limit(limit).offset(offset))]

    def count(self) -> int:
        with self._sessions() as session:
            return session.scalar(select(func.count()).select_from(ApiKeyRow)) or 0

    def revoke(self, key_id: str, actor: str = "cli") -> ApiKey | None:
        """Revoke a key (at once, for every later request); None when there is no such key."""
        with self._sessions.begin() as session:
            row = session.get(ApiKeyRow, key_id)
            if row is None:
                return None
            newly = row.revoked_at is None
            if newly:
                row.revoked_at = dt.datetime.now(dt.UTC)
            key = _view(row)
        if newly:
            self._audit.append(AuditEvent.KEY_REVOKED, actor, target=key_id, detail={})
        return key

    def ensure_admin(self, groups: list[str]) -> str | None:
        """On first start: a bootstrap admin key when no usable admin key exists (its secret is
        returned, to be shown once); None when there is one already."""
        if self.has_active_admin():
            return None
        _, secret = self.create(Role.ADMIN, groups, name="bootstrap-admin", created_by="bootstrap")
        return secret

    def has_active_admin(self) -> bool:
        with self._sessions() as session:
            query = select(ApiKeyRow.key_id).where(
                ApiKeyRow.role == Role.ADMIN.value, ApiKeyRow.revoked_at.is_(None)
            )
            return session.scalars(query.limit(1)).first() is not None

    def authenticate(self, secret: str) -> Principal:
        digest = hash_key(secret)
        with self._sessions() as session:
            row = session.scalars(select(ApiKeyRow).where(ApiKeyRow.key_hash == digest)).first()
        # The lookup is by hash, so a timing difference could only reveal hashes; compare anyway.
        if row is None or not hmac.compare_digest(row.key_hash, digest):
            raise AuthError("unknown API key")
        if row.revoked_at is not None:
            raise AuthError("this API key has been revoked")
        return Principal(subject=key_subject(row.key_id), groups=row.groups, role=Role(row.role))


def _claim(claims: dict[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part for part in value.replace(",", " ").split() if part]
    if isinstance(value, list):
        return [str(item) for item in value]
    return [str(value)]


class JwtVerifier:
    """Verifies OIDC access tokens: signature against the issuer's JWKS, issuer, audience, expiry.

    The role comes from a configurable claim (a list grants the highest role it names; none:
    analyst), the groups from another.
    """

    def __init__(
        self,
        issuer: str,
        jwks: str,
        audience: str | None = None,
        algorithms: list[str] | None = None,
        role_claim: str = "role",
        groups_claim: str = "groups",
        leeway_s: float = 30.0,
    ) -> None:
        if not issuer:
            raise ValueError("a JWT issuer is required")
        if not jwks:
            raise ValueError("REGULUS_JWT_JWKS is required with REGULUS_JWT_ISSUER")
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms or ["RS256", "ES256"]
        self.role_claim = role_claim
        self.groups_claim = groups_claim
        self.leeway_s = leeway_s
        self._client: jwt.PyJWKClient | None = None
        self._keys: jwt.PyJWKSet | None = None
        source = jwks.strip()
        if source.startswith(("http://", "https://")):
            self._client = jwt.PyJWKClient(source, cache_keys=True, lifespan=300, timeout=5)
        else:
            text = source if source.startswith("{") else Path(source).read_text(encoding="utf-8")
            self._keys = jwt.PyJWKSet.from_dict(json.loads(text))

    @classmethod
    def from_settings(cls, settings: Settings) -> JwtVerifier | None:
        """The configured verifier, or None when no issuer is set (API keys only)."""
        if settings.jwt_issuer is None:
            return None
        return cls(
            settings.jwt_issuer,
            settings.jwt_jwks or "",
            audience=settings.jwt_audience,
            algorithms=settings.jwt_algorithms,
            role_claim=settings.jwt_role_claim,
            groups_claim=settings.jwt_groups_claim,
            leeway_s=settings.jwt_leeway_s,
        )

    def _signing_key(self, token: str) -> jwt.PyJWK:
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token)
        assert self._keys is not None
        kid = jwt.get_unverified_header(token).get("kid")
        if kid is None and len(self._keys.keys) == 1:
            return self._keys.keys[0]
        try:
            return self._keys[str(kid)]
        except KeyError as error:
            raise AuthError(f"no signing key {kid!r} in the configured JWKS") from error

    def run(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._signing_key(token),
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.PyJWKClientError as error:
            raise AuthError(f"token signing key unavailable: {error}") from error
        except jwt.InvalidTokenError as error:
            raise AuthError(f"invalid token: {error}") from error
        roles = [Role(r) for r in _as_list(_claim(claims, self.role_claim)) if r in set(Role)]
        role = max(roles, key=_ROLE_RANK.__getitem__, default=Role.ANALYST)
        groups = _as_list(_claim(claims, self.groups_claim))
        # Namespaced, so that no token's subject can pass for a key holder's (key:...) or the CLI's.
        return Principal(subject=f"oidc:{claims['sub']}", groups=groups, role=role)


class Authenticator:
    """A bearer credential in, a principal out: `rk_...` is an API key, anything else a JWT."""

    def __init__(self, keys: KeyStore, jwt_verifier: JwtVerifier | None = None) -> None:
        self.keys = keys
        self.jwt_verifier = jwt_verifier

    def run(self, credential: str) -> Principal:
        if credential.startswith(KEY_PREFIX):
            return self.keys.authenticate(credential)
        if self.jwt_verifier is None:
            raise AuthError("not an API key (rk_...), and no JWT issuer is configured")
        return self.jwt_verifier.run(credential)
