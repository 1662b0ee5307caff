"""`POST /v1/verify`: check sentences an analyst wrote against the documents they cite."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import CurrentPrincipal, ServicesDep
from api.errors import ApiError
from api.limits import QuerySlot
from api.schemas import ErrorResponse, VerifiedSentenceOut, VerifyRequest, VerifyResponse
from generation.drafts import DraftNotFoundError, DraftSentence, DraftVerifier

router = APIRouter(prefix="/v1", tags=["verify"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such document or section (or not visible)"},
    503: {"model": ErrorResponse, "description": "Verification is off, or all slots are busy"},
}


@router.post("/verify", operation_id="verify", responses=_RESPONSES)
def verify(
    body: VerifyRequest, services: ServicesDep, principal: CurrentPrincipal, _slot: QuerySlot
) -> VerifyResponse:
    """Check each sentence against the named section's passages, or the passages retrieved for
    it, from the documents the caller may read: supported or not, and why not."""
    verifier = services.verifier
    if verifier is None:
        raise ApiError(503, "verifier_off", "verification is off (REGULUS_VERIFIER is not set)")
    drafts = DraftVerifier(
        verifier, services.retriever(), services.store, services.embedder, services.catalog
    )
    sentences = [DraftSentence(s.text, s.document_id, s.section) for s in body.sentences]
    try:
        verdicts = drafts.run(sentences, principal)
    except DraftNotFoundError as error:
        raise ApiError(404, "not_found", str(error)) from error
    supported = sum(1 for v in verdicts if v.sentence.supported)
    return VerifyResponse(
        sentences=[VerifiedSentenceOut.from_verdict(v) for v in verdicts],
        support_score=supported / len(verdicts),
    )
