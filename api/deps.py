"""Dependency aliases for route signatures."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.errors import ApiError
from core.pipeline import QueryPipeline, Services
from eval.jobs import EvalJobs
from retrieval.filters import Principal

_bearer = HTTPBearer(auto_error=False, description="REGULUS_ADMIN_TOKEN for admin routes.")


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_eval_jobs(request: Request) -> EvalJobs:
    jobs: EvalJobs = request.app.state.eval_jobs
    return jobs


def get_pipeline(request: Request) -> QueryPipeline:
    pipeline: QueryPipeline = request.app.state.pipeline
    return pipeline


ServicesDep = Annotated[Services, Depends(get_services)]
PipelineDep = Annotated[QueryPipeline, Depends(get_pipeline)]
EvalJobsDep = Annotated[EvalJobs, Depends(get_eval_jobs)]


def get_principal(services: ServicesDep) -> Principal:
    return services.anonymous_principal()


def require_admin(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = services.settings.admin_token
    if token is None:
        raise ApiError(403, "admin_disabled", "admin routes are closed: set REGULUS_ADMIN_TOKEN")
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise ApiError(401, "unauthorized", "send the admin token as 'Authorization: Bearer ...'")
    return Principal(subject="admin", groups=services.settings.default_access_groups)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
AdminPrincipal = Annotated[Principal, Depends(require_admin)]
# Evaluators or admins; until sign-in with roles lands, only the admin token qualifies.
EvaluatorPrincipal = Annotated[Principal, Depends(require_admin)]
