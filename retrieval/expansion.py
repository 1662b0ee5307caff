"""Cross-reference expansion: the passages that the best hits cite join the results.

A question about a rule that says "as required under Rule 7.2.1" needs Rule 7.2.1 too, and the
question rarely shares words with it. The best hits' references (`retrieval.references`) are
looked up in the store with the caller's filter plus the reference keys, so a cited passage the
caller may not read is never found, let alone returned.
"""

from __future__ import annotations

import numpy as np
from qdrant_client import models

from core.models import RetrievedChunk
from retrieval.references import Reference, extract_references
from retrieval.store import VectorStore


def _reference_filter(base: models.Filter, reference: Reference, document_id: str) -> models.Filter:
    """The caller's filter narrowed to the cited passage: same document unless a code is named."""
    where = (
        models.FieldCondition(
            key="document_codes", match=models.MatchValue(value=reference.document_code)
        )
        if reference.document_code
        else models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))
    )
    must = base.must if isinstance(base.must, list) else [base.must] if base.must else []
    return models.Filter(
        must=[
            *must,
            models.FieldCondition(key="ref_keys", match=models.MatchAny(any=reference.keys)),
            where,
        ],
        must_not=base.must_not,
    )


class ReferenceExpander:
    """Adds the passages cited by the first `from_top` hits after the `top_k` hits, at most
    `max_added` in all, best match to the query first when a reference is ambiguous. The ranking
    itself is unchanged; an answer weighs a cited passage with the passage citing it."""

    def __init__(self, store: VectorStore, from_top: int = 3, max_added: int = 3) -> None:
        if from_top < 1 or max_added < 1:
            raise ValueError("from_top and max_added must be at least 1")
        self._store = store
        self.from_top = from_top
        self.max_added = max_added

    def run(
        self,
        hits: list[RetrievedChunk],
        *,
        dense: np.ndarray | None,
        sparse: models.SparseVector | None,
        query_filter: models.Filter,
        top_k: int,
    ) -> list[RetrievedChunk]:
        seen = {hit.chunk.chunk_id for hit in hits[:top_k]}
        added: list[RetrievedChunk] = []
        budget = self.max_added
        for hit in hits[: self.from_top]:
            for reference in extract_references(hit.chunk.text, hit.chunk.section_ref):
                if budget == 0:
                    break
                found = self._store.search(
                    dense=dense,
                    sparse=sparse,
                    limit=2,  # the best match may be a passage already listed
                    query_filter=_reference_filter(query_filter, reference, hit.chunk.document_id),
                    candidates=10,
                )
                for cited in found:
                    if cited.chunk.chunk_id not in seen:
                        seen.add(cited.chunk.chunk_id)
                        # Ranked with the passage that cites it: scores stay in one scale.
                        added.append(
                            cited.model_copy(
                                update={"score": hit.score, "cited_by": hit.chunk.chunk_id}
                            )
                        )
                        budget -= 1
                        break
        # After the ranking, which they leave as it is: each names the hit citing it (`cited_by`).
        return hits[:top_k] + added
