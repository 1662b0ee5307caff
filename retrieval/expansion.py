"""Cross-reference expansion: the passages that the best hits cite, and those citing them, join
the results.

A question about a rule that says "as required under Rule 7.2.1" needs Rule 7.2.1 too, and the
question rarely shares words with it. The best hits' references (`retrieval.references`) are
looked up in the store with the caller's filter plus the reference keys, so a cited passage the
caller may not read is never found, let alone returned. The other way round, a question that
finds Rule 7.2.1 may be about the rule applying it: the passages of the same document whose text
cites the hit's rule number (a keyword search for it, then the closest to the question) join too.
"""

from __future__ import annotations

import re

import numpy as np
from qdrant_client import models

from core.models import RetrievedChunk
from retrieval.references import Reference, extract_references, section_keys
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore

# A rule number of two levels or more ("7.2.1") is one keyword that only citations of it share;
# an article number alone ("33") is everywhere.
_RULE_NUMBER = re.compile(r"^\d+[a-z]?(?:\.\d+[a-z]?)+$")
_CITING_CANDIDATES = 20


def _narrowed(base: models.Filter, *conditions: models.FieldCondition) -> models.Filter:
    must = base.must if isinstance(base.must, list) else [base.must] if base.must else []
    return models.Filter(must=[*must, *conditions], must_not=base.must_not)


def _in_document(document_id: str) -> models.FieldCondition:
    return models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))


def _reference_filter(base: models.Filter, reference: Reference, document_id: str) -> models.Filter:
    """The caller's filter narrowed to the cited passage: same document unless a code is named."""
    where = (
        models.FieldCondition(
            key="document_codes", match=models.MatchValue(value=reference.document_code)
        )
        if reference.document_code
        else _in_document(document_id)
    )
    keys = models.FieldCondition(key="ref_keys", match=models.MatchAny(any=reference.keys))
    return _narrowed(base, keys, where)


def rule_number(section_ref: str | None) -> str | None:
    """The passage's own rule number when it has levels ("7.2.1" for "7.2.1.(2)"), else None."""
    return next((key for key in section_keys(section_ref) if _RULE_NUMBER.match(key)), None)


class ReferenceExpander:
    """Adds, after the `top_k` hits, the passages cited by the first `from_top` hits (at most
    `max_added`, best match to the query first when a reference is ambiguous), then passages
    citing those hits' rule numbers (at most `max_citing`, the closest to the query for each hit).
    The ranking itself is unchanged; an answer weighs an added passage with the hit it joins."""

    def __init__(
        self, store: VectorStore, from_top: int = 3, max_added: int = 3, max_citing: int = 2
    ) -> None:
        if from_top < 1 or max_added < 1 or max_citing < 0:
            raise ValueError("from_top and max_added must be at least 1, max_citing at least 0")
        self._store = store
        self._keywords = BM25Encoder()
        self.from_top = from_top
        self.max_added = max_added
        self.max_citing = max_citing

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
                        added.append(_joining(cited, hit))
                        budget -= 1
                        break
        citing_left = self.max_citing
        for hit in hits[: self.from_top]:
            if citing_left == 0:
                break
            citing = self._citing(hit, dense, query_filter, seen)
            if citing is not None:
                seen.add(citing.chunk.chunk_id)
                added.append(_joining(citing, hit))
                citing_left -= 1
        # After the ranking, which they leave as it is: each names the hit it joins (`joins`).
        return hits[:top_k] + added

    def _citing(
        self,
        hit: RetrievedChunk,
        dense: np.ndarray | None,
        query_filter: models.Filter,
        seen: set[str],
    ) -> RetrievedChunk | None:
        """The passage of the hit's document, not yet listed, that cites the hit's rule number
        and is the closest to the query."""
        number = rule_number(hit.chunk.section_ref)
        if number is None:
            return None
        found = self._store.search(
            dense=None,
            sparse=self._keywords.encode_query(number),
            limit=_CITING_CANDIDATES,
            query_filter=_narrowed(query_filter, _in_document(hit.chunk.document_id)),
            candidates=_CITING_CANDIDATES,
        )
        citing = [
            passage
            for passage in found
            if passage.chunk.chunk_id not in seen
            and any(
                number in reference.keys
                for reference in extract_references(passage.chunk.text, passage.chunk.section_ref)
            )
        ]
        if not citing or dense is None:
            return citing[0] if citing else None
        return max(citing, key=lambda p: float(np.dot(p.vector, dense)) if p.vector else -1.0)


def _joining(passage: RetrievedChunk, hit: RetrievedChunk) -> RetrievedChunk:
    # Ranked with the hit it joins: scores stay in one scale.
    return passage.model_copy(update={"score": hit.score, "joins": hit.chunk.chunk_id})
