from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from api.deps import EvalJobsDep, EvaluatorPrincipal
from api.errors import ApiError
from api.pagination import MAX_OFFSET
from api.schemas import ErrorResponse, EvalRunList, EvalRunOut, EvalRunRequest
from eval.jobs import EvalJobRequest, RunFinishedError

router = APIRouter(prefix="/v1/eval/runs", tags=["eval"])


@router.post("", operation_id="create_eval_run", status_code=status.HTTP_202_ACCEPTED)
def create_run(
    body: EvalRunRequest, jobs: EvalJobsDep, evaluator: EvaluatorPrincipal
) -> EvalRunOut:
    """Evaluate a question set through the query pipeline as a background job (evaluators).

    The run searches only the documents the caller's groups may read; poll it for progress.
    """
    request = EvalJobRequest.model_validate(body.model_dump(exclude={"questions"}))
    try:
        info = jobs.submit(request, body.questions, evaluator)
    except ValueError as error:
        raise ApiError(422, "invalid_dataset", str(error)) from error
    return EvalRunOut.model_validate(info.model_dump())


@router.get("", operation_id="list_eval_runs")
def list_runs(
    jobs: EvalJobsDep,
    evaluator: EvaluatorPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> EvalRunList:
    """The caller's evaluation runs (every run for admins), newest first, with their progress."""
    infos, total = jobs.list(limit, offset, evaluator)
    return EvalRunList(
        items=[EvalRunOut.model_validate(i.model_dump()) for i in infos],
        total=total,
        limit=limit,
        offset=offset,
    )


_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such run (or not the caller's)"}
}


@router.get("/{run_id}", operation_id="get_eval_run", responses=_NOT_FOUND)
def get_run(run_id: str, jobs: EvalJobsDep, evaluator: EvaluatorPrincipal) -> EvalRunOut:
    """One of the caller's runs (any run for admins): progress and, once finished, its figures."""
    found = jobs.get(run_id, evaluator)
    if found is None:
        raise ApiError(404, "not_found", f"no evaluation run {run_id!r}")
    info, summary = found
    return EvalRunOut.model_validate(info.model_dump() | {"summary": summary})


@router.delete(
    "/{run_id}",
    operation_id="cancel_eval_run",
    responses={
        **_NOT_FOUND,
        409: {"model": ErrorResponse, "description": "The run has already ended"},
    },
)
def cancel_run(run_id: str, jobs: EvalJobsDep, evaluator: EvaluatorPrincipal) -> EvalRunOut:
    """Cancel one of the caller's runs (any run for admins): a queued run at once, a running one
    after its current question; what it recorded is kept."""
    try:
        info = jobs.cancel(run_id, evaluator)
    except RunFinishedError as error:
        raise ApiError(409, "run_finished", str(error)) from error
    if info is None:
        raise ApiError(404, "not_found", f"no evaluation run {run_id!r}")
    return EvalRunOut.model_validate(info.model_dump())
