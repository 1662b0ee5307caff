"""Saved answers: keep an answer as a memo, share it, review it when what it cites changes,
export it. Who sees what: `core.saved.readable_by`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, status
from fastapi.responses import Response

from api.deps import CurrentPrincipal, ServicesDep
from api.errors import ApiError
from api.memo import MEDIA_TYPES, SUFFIXES, MemoFormat
from api.pagination import Page, Pagination
from api.saved_answers import SavedResearch
from api.schemas import ErrorResponse, SavedAnswerSummary, SavedUpdate, SaveRequest
from core.saved import SavedAnswer, SavedAnswerError, SavedStatus

router = APIRouter(prefix="/v1/saved", tags=["saved answers"])


def get_research(services: ServicesDep) -> SavedResearch:
    return SavedResearch.of(services)


ResearchDep = Annotated[SavedResearch, Depends(get_research)]
T = TypeVar("T")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        403: "Only the owner may do this, or a group that is not yours",
        404: "No such saved answer (or not visible to you)",
        409: "The answer's documents changed since, or it cites nothing",
    }
    return {code: {"model": ErrorResponse, "description": described[code]} for code in codes}


def _call(action: Callable[[], T]) -> T:
    """The action's result; its refusal as the API's error body."""
    try:
        return action()
    except SavedAnswerError as error:
        raise ApiError(error.status, error.code, error.message) from error


@router.post(
    "",
    operation_id="save_answer",
    status_code=status.HTTP_201_CREATED,
    responses=_errors(403, 404, 409),
)
def save(body: SaveRequest, research: ResearchDep, principal: CurrentPrincipal) -> SavedAnswer:
    """Keep one of your answers (by its `query_id`) with its citations' exact text and versions."""
    return _call(
        lambda: research.save(principal, body.query_id, body.title, body.notes, body.shared_with)
    )


@router.get("", operation_id="list_saved_answers")
def list_saved(
    research: ResearchDep,
    principal: CurrentPrincipal,
    page: Pagination,
    status: Annotated[
        SavedStatus | None, Query(description="Only these, e.g. needs_review.")
    ] = None,
) -> Page[SavedAnswerSummary]:
    """Your saved answers and those shared with your groups, newest first."""
    answers = research.visible(principal, status)
    return page.slice([SavedAnswerSummary.from_saved(a) for a in answers])


@router.get("/{saved_id}", operation_id="get_saved_answer", responses=_errors(404))
def get_saved(saved_id: str, research: ResearchDep, principal: CurrentPrincipal) -> SavedAnswer:
    """One saved answer with its citations, each with how it reads now (and a diff if changed)."""
    return _call(lambda: research.get(principal, saved_id))


@router.patch("/{saved_id}", operation_id="update_saved_answer", responses=_errors(403, 404))
def update_saved(
    saved_id: str, body: SavedUpdate, research: ResearchDep, principal: CurrentPrincipal
) -> SavedAnswer:
    """Retitle, annotate, or share with groups (the owner, with groups of their own)."""
    return _call(
        lambda: research.update(principal, saved_id, body.title, body.notes, body.shared_with)
    )


@router.post("/{saved_id}/review", operation_id="review_saved_answer", responses=_errors(404))
def review_saved(saved_id: str, research: ResearchDep, principal: CurrentPrincipal) -> SavedAnswer:
    """Mark the changes to what it cites as reviewed."""
    return _call(lambda: research.review(principal, saved_id))


@router.delete(
    "/{saved_id}",
    operation_id="delete_saved_answer",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=_errors(403, 404),
)
def delete_saved(saved_id: str, research: ResearchDep, principal: CurrentPrincipal) -> None:
    _call(lambda: research.delete(principal, saved_id))


@router.get(
    "/{saved_id}/export",
    operation_id="export_saved_answer",
    response_class=Response,
    responses={
        200: {
            "content": {"text/markdown": {}, "text/html": {}},
            "description": "The memo, as a file",
        },
        **_errors(404),
    },
)
def export_saved(
    saved_id: str,
    research: ResearchDep,
    principal: CurrentPrincipal,
    format: Annotated[
        MemoFormat, Query(description="markdown, or one self-contained HTML file.")
    ] = MemoFormat.MARKDOWN,
) -> Response:
    """The saved answer as a memo: question, answer, citations with quoted text and versions."""
    text = _call(lambda: research.export(principal, saved_id, format))
    filename = f"saved-answer-{saved_id}.{SUFFIXES[format]}"
    return Response(
        text,
        media_type=MEDIA_TYPES[format],
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            # The HTML memo is a document to keep, not part of this site: it runs nothing here.
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
            "X-Content-Type-Options": "nosniff",
        },
    )
