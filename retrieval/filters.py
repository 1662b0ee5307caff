"""Metadata filters and access control, compiled into one Qdrant filter.

Access control runs inside the vector store query, so a chunk the caller may not read is never
scored, returned, reranked or cited. Quarantined chunks (e.g. prompt-injection suspects, see
core/injection.py) are excluded the same way, for every caller.
"""

from __future__ import annotations

from qdrant_client import models

from core.injection import QUARANTINE_REASON as QUARANTINE
from core.models import Principal, SearchFilters


def _any_of(key: str, values: list[str] | None) -> list[models.Condition]:
    if values is None:
        return []
    return [models.FieldCondition(key=key, match=models.MatchAny(any=values))]


def build_filter(principal: Principal, filters: SearchFilters | None = None) -> models.Filter:
    filters = filters or SearchFilters()
    must: list[models.Condition] = [
        # A caller with no groups matches nothing: MatchAny over an empty list is never true.
        models.FieldCondition(key="access_groups", match=models.MatchAny(any=principal.groups)),
        *_any_of("document_id", filters.document_ids),
        *_any_of("jurisdiction", filters.jurisdictions),
        *_any_of("regulator", filters.regulators),
        *_any_of("document_type", filters.document_types),
    ]
    if filters.effective_from or filters.effective_to:
        must.append(
            models.FieldCondition(
                key="effective_date",
                range=models.DatetimeRange(gte=filters.effective_from, lte=filters.effective_to),
            )
        )
    # Chunks stored before quarantine existed have no such field and stay searchable.
    quarantined = models.FieldCondition(key="quarantine", match=models.MatchValue(value=QUARANTINE))
    return models.Filter(must=must, must_not=[quarantined])
