from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from api.deps import EvalJobsDep, EvaluatorPrincipal
from api.errors import ApiError
from api.pagination import MAX_OFFSET
from api.schemas import EvalRunList, EvalRunOut, EvalRunRequest
from eval.jobs import EvalJobRequest

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
    _evaluator: EvaluatorPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> EvalRunList:
    """Evaluation runs, newest first, with their progress (evaluators)."""
    infos, total = jobs.list(limit, offset)
    return EvalRunList(
        items=[EvalRunOut.model_validate(i.model_dump()) for i in infos],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{run_id}", operation_id="get_eval_run")
def get_run(run_id: str, jobs: EvalJobsDep, _evaluator: EvaluatorPrincipal) -> EvalRunOut:
    """One run: progress and, once finished, its summary figures (evaluators)."""
    found = jobs.get(run_id)
    if found is None:
        raise ApiError(404, "not_found", f"no evaluation run {run_id!r}")
    info, summary = found
    return EvalRunOut.model_validate(info.model_dump() | {"summary": summary})
