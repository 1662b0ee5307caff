"""The store contract every deployment implements, with the chunk ids and payload they share."""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np
from qdrant_client import models

from core.models import Chunk, DocumentFields, FusionMethod, RetrievedChunk
from retrieval.references import document_codes, reference_payload

DENSE_VECTOR = "dense"
SPARSE_VECTOR = "sparse"
# Fixed namespace so that chunk ids are the same on every machine and every run.
CHUNK_ID_NAMESPACE = uuid.UUID("6f1c1d9e-54a3-4c1b-9a57-2d1f0e5b7c10")
KEYWORD_FIELDS = (
    "document_id",
    "content_hash",
    "jurisdiction",
    "regulator",
    "document_type",
    "access_groups",
    "quarantine",
    "ref_keys",
    "document_codes",
)
DATE_FIELDS = ("effective_date",)
# Engines order equal scores by how they happen to store the points, each differently (qdrant-edge
# and qdrant-client's local mode disagree on the same data): every search fetches this many more
# than it keeps and breaks ties by chunk id, so that every deployment, and every run, gives the
# same passages for the same question.
TIE_MARGIN = 10
RRF_K = 2  # Qdrant's default ranking constant: 1 / (rank + k), rank from 0
# Sparse IDF over the live points. Qdrant's default (global) statistics come from the sparse index,
# which goes on counting deleted points (the old version of a re-ingested document) until the
# optimizer vacuums their segment (on qdrant-edge, even `optimize()` left them counted), while
# qdrant-client's local mode never counts them: a corpus filter makes every deployment count the
# points that are there.
IDF_CORPUS = models.Filter()


class StoreUnavailableError(RuntimeError):
    pass


def chunk_point_id(document_id: str, section: str, ordinal: int) -> str:
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, f"{document_id}\x1f{section}\x1f{ordinal}"))


def chunk_payload(chunk: Chunk) -> dict[str, object]:
    """The chunk itself, plus the keys that cross-references to it are looked up by."""
    return chunk.model_dump(mode="json") | reference_payload(chunk)


def document_fields_payload(fields: DocumentFields) -> dict[str, object]:
    """The payload keys every chunk of a document shares, as `chunk_payload` writes them."""
    return fields.model_dump(mode="json", exclude={"document_id"}) | {
        "document_codes": document_codes(fields.document_title)
    }


def match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


Scored = tuple[str, float]
"""A chunk id and its score."""
NearestQuery = tuple[str, list[float] | models.SparseVector]
"""The vector name and the query vector of one nearest-neighbour search."""


def best(hits: Iterable[Scored], limit: int) -> list[Scored]:
    """The `limit` best hits, equal scores in chunk id order."""
    return sorted(hits, key=lambda hit: (-hit[1], hit[0]))[:limit]


def _dbsf_normalized(hits: Sequence[Scored]) -> list[Scored]:
    """Scores mapped from mean ± 3 sample standard deviations onto 0..1, as Qdrant's DBSF does."""
    if len(hits) == 1:
        return [(hits[0][0], 0.5)]
    scores = [score for _, score in hits]
    mean = sum(scores) / len(scores)
    variance = sum((score - mean) ** 2 for score in scores) / (len(scores) - 1)
    if variance == 0:
        return [(chunk_id, 0.5) for chunk_id, _ in hits]
    low, high = mean - 3 * variance**0.5, mean + 3 * variance**0.5
    return [(chunk_id, (score - low) / (high - low)) for chunk_id, score in hits]


def fuse(ranked_lists: Sequence[Sequence[Scored]], fusion: FusionMethod) -> list[Scored]:
    """Qdrant's fusions (RRF with `RRF_K`, DBSF) of candidate lists that `best` ordered; unsorted.

    Fused here rather than in the engine: RRF scores ranks, and the engine ranks equal scores in
    its storage order, so only lists whose ties are already broken fuse alike everywhere.
    """
    fused: dict[str, float] = defaultdict(float)
    for hits in ranked_lists:
        if fusion is FusionMethod.RRF:
            for rank, (chunk_id, _) in enumerate(hits):
                fused[chunk_id] += 1 / (rank + RRF_K)
        elif hits:
            for chunk_id, score in _dbsf_normalized(hits):
                fused[chunk_id] += score
    return list(fused.items())


class RankedSearch(ABC):
    """`search` on top of two engine calls, with the same tie-breaking and fusion everywhere."""

    @abstractmethod
    def _nearest(
        self, queries: Sequence[NearestQuery], query_filter: models.Filter, limit: int
    ) -> list[list[Scored]]:
        """The `limit` nearest chunks per query (one batch), in any order among equal scores."""

    @abstractmethod
    def _load(self, chunk_ids: Sequence[str]) -> dict[str, tuple[Chunk, list[float] | None]]:
        """The stored chunks of these ids with their dense vectors, by id (deleted ones are
        missing)."""

    def search(
        self,
        *,
        dense: np.ndarray | None,
        sparse: models.SparseVector | None,
        limit: int,
        query_filter: models.Filter,
        candidates: int = 100,
        fusion: FusionMethod = FusionMethod.DBSF,
    ) -> list[RetrievedChunk]:
        """Dense, sparse, or both fused by `fusion` when both are given."""
        queries: list[NearestQuery] = []
        if dense is not None:
            queries.append((DENSE_VECTOR, dense.tolist()))
        if sparse is not None:
            queries.append((SPARSE_VECTOR, sparse))
        if not queries:
            raise ValueError("search needs a dense or a sparse query vector")
        if len(queries) == 1:
            hits = best(self._nearest(queries, query_filter, limit + TIE_MARGIN)[0], limit)
        else:
            found = self._nearest(queries, query_filter, candidates + TIE_MARGIN)
            hits = best(fuse([best(each, candidates) for each in found], fusion), limit)
        loaded = self._load([chunk_id for chunk_id, _ in hits])
        return [
            RetrievedChunk(chunk=loaded[chunk_id][0], score=score, vector=loaded[chunk_id][1])
            for chunk_id, score in hits
            if chunk_id in loaded
        ]


def dense_of(vectors: object) -> list[float] | None:
    """The dense vector among a record's named vectors (both engines give a name -> vector map)."""
    if isinstance(vectors, dict):
        dense = vectors.get(DENSE_VECTOR)
        return [float(x) for x in dense] if isinstance(dense, list) else None
    return None


class VectorStore(Protocol):
    """Chunks with dense and sparse vectors; the payload is the chunk itself.

    Two deployments behind one contract: a Qdrant server or cluster
    (`retrieval.store.server.QdrantServerStore`) and Qdrant's engine embedded in the process
    (`retrieval.store.edge.EdgeVectorStore`, the default).
    """

    def ensure_collection(self, dimension: int) -> None: ...
    def has_document(self, document_id: str, content_hash: str) -> bool: ...
    def upsert(
        self, chunks: Sequence[Chunk], dense: np.ndarray, sparse: Sequence[models.SparseVector]
    ) -> None: ...
    def delete_document(self, document_id: str) -> int: ...
    def delete_other_versions(self, document_id: str, content_hash: str) -> None: ...
    def update_document_fields(self, document_id: str, fields: DocumentFields) -> None:
        """Set the document-level fields (title, groups, dates ...) on all its chunks at once."""
        ...

    def chunks(self, document_id: str | None = None) -> list[Chunk]: ...
    def count(self) -> int: ...
    def search(
        self,
        *,
        dense: np.ndarray | None,
        sparse: models.SparseVector | None,
        limit: int,
        query_filter: models.Filter,
        candidates: int = 100,
        fusion: FusionMethod = FusionMethod.DBSF,
    ) -> list[RetrievedChunk]: ...
    def optimize(self) -> None: ...
    def close(self) -> None: ...
