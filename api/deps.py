"""Dependency aliases for route signatures: the narrow component each route needs, and who is
calling."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, NoReturn

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.schemas import ErrorResponse
from api.services import Services
from core.audit import AuditLog
from core.auth import AuthError, KeyStore
from core.catalog import Catalog
from core.models import Principal, Role
from core.settings import Settings
from eval.jobs import EvalJobs
from generation.pipeline import QueryPipeline
from ingest.pipeline import Ingestor

if TYPE_CHECKING:
    from api.limits import AuthGuard

_bearer = HTTPBearer(
    auto_error=False, description="An API key (rk_...) or an OIDC access token (JWT)."
)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_eval_jobs(request: Request) -> EvalJobs:
    jobs: EvalJobs = request.app.state.eval_jobs
    return jobs


def get_pipeline(request: Request) -> QueryPipeline:
    pipeline: QueryPipeline = request.app.state.pipeline
    return pipeline


def get_ingestor(services: ServicesDep) -> Ingestor:
    return services.ingestor()


def get_settings_of(services: ServicesDep) -> Settings:
    return services.settings


def get_audit(services: ServicesDep) -> AuditLog:
    return services.audit


def get_catalog(services: ServicesDep) -> Catalog:
    return services.catalog


def get_keys(services: ServicesDep) -> KeyStore:
    return services.keys


PipelineDep = Annotated[QueryPipeline, Depends(get_pipeline)]
EvalJobsDep = Annotated[EvalJobs, Depends(get_eval_jobs)]
IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_settings_of)]
AuditDep = Annotated[AuditLog, Depends(get_audit)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
KeyStoreDep = Annotated[KeyStore, Depends(get_keys)]


# Documented on every route behind authentication.
AUTH_ERRORS: dict[int | str, dict[str, object]] = {
    401: {
        "model": ErrorResponse,
        "description": "Missing, unknown, revoked or expired credentials",
    },
    403: {"model": ErrorResponse, "description": "The caller's role may not use this route"},
}


def deny(
    services: Services,
    request: Request,
    status: int,
    code: str,
    message: str,
    principal: Principal | None = None,
) -> NoReturn:
    """Refuse the request, and account for it in the audit log (repeats of one client coalesce,
    so a flood cannot grow the log) and, for failed authentication, in that client's limit."""
    guard: AuthGuard = request.app.state.auth_guard
    guard.refuse(request, status, code, message, principal)


def bearer_credential(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer ...` header, as HTTPBearer reads it."""
    scheme, _, credential = (authorization or "").partition(" ")
    return (credential.strip() or None) if scheme.lower() == "bearer" else None


def authenticate(request: Request, services: Services, credential: str | None) -> Principal:
    """The caller, kept on the request for the routes after; 401 (or 429 for a client address
    that failed too often: its credentials are then not even checked)."""
    known: Principal | None = getattr(request.state, "principal", None)
    if known is not None:
        return known
    if not services.settings.auth_enabled:
        principal = services.anonymous_principal()
    else:
        guard: AuthGuard = request.app.state.auth_guard
        guard.check(request)
        if credential is None:
            deny(
                services,
                request,
                401,
                "unauthorized",
                "send 'Authorization: Bearer <key or token>'",
            )
        try:
            principal = services.authenticator.run(credential)
        except AuthError as error:
            deny(services, request, 401, "invalid_credentials", str(error))
    request.state.principal = principal
    return principal


def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller; with authentication off, the anonymous analyst. Requests with
    a body were authenticated before it was read (api.limits.RequestGate)."""
    return authenticate(request, services, credentials.credentials if credentials else None)


def require_role(*roles: Role) -> Callable[..., Principal]:
    """A dependency that lets through the given roles only (403 for the others)."""

    def check(request: Request, services: ServicesDep, principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            allowed = " or ".join(role.value for role in roles)
            deny(services, request, 403, "forbidden", f"this route is for {allowed}", principal)
        return principal

    return check


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_role(Role.ADMIN))]
EvaluatorPrincipal = Annotated[Principal, Depends(require_role(Role.EVALUATOR, Role.ADMIN))]
