"""The embedded vector store: Qdrant's own engine in-process (qdrant-edge), on local disk.

qdrant-client's local mode is pure Python: about 1 s per hybrid query at 100k chunks and ~14 ms
per point written on a slow disk. qdrant-edge runs the Qdrant engine itself in-process: exact
hybrid search with filters in milliseconds at 100k chunks (benchmarks/retrieval_latency.py,
figures in docs/benchmarks.md). HNSW is off: exact search is fast enough at this scale, has
recall 1.0, and keeps `optimize()` (which holds the GIL) to a few seconds.

One process owns a store folder at a time (a lock file, taken before the engine opens it).
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import qdrant_edge as edge
from qdrant_client import models

from core.models import Chunk, DocumentFields
from retrieval.store.base import (
    DATE_FIELDS,
    DENSE_VECTOR,
    IDF_CORPUS,
    KEYWORD_FIELDS,
    SPARSE_VECTOR,
    NearestQuery,
    RankedSearch,
    Scored,
    StoreUnavailableError,
    chunk_payload,
    dense_of,
    document_fields_payload,
    match,
)

_META = "regulus-store.json"
_SCROLL_PAGE = 1000


def _condition(condition: models.Condition) -> Any:
    if not isinstance(condition, models.FieldCondition):
        raise TypeError(f"unsupported filter condition {type(condition).__name__}")
    if isinstance(condition.match, models.MatchValue):
        return edge.FieldCondition(
            key=condition.key, match=edge.MatchValue(value=condition.match.value)
        )
    if isinstance(condition.match, models.MatchAny):
        return edge.FieldCondition(key=condition.key, match=edge.MatchAny(any=condition.match.any))
    if isinstance(condition.range, models.DatetimeRange):
        bounds = {
            name: value.isoformat()
            for name in ("gte", "lte", "gt", "lt")
            if (value := getattr(condition.range, name)) is not None
        }
        return edge.FieldCondition(key=condition.key, range=edge.RangeDateTime(**bounds))
    raise TypeError(f"unsupported condition on {condition.key!r}")


def to_edge_filter(query_filter: models.Filter | None) -> Any:
    """The subset of qdrant-client filters Regulus builds, as qdrant-edge filters."""
    if query_filter is None:
        return None

    def conditions(items: Any) -> list[Any] | None:
        if not items:
            return None
        return [_condition(c) for c in (items if isinstance(items, list) else [items])]

    return edge.Filter(
        must=conditions(query_filter.must), must_not=conditions(query_filter.must_not)
    )


class EdgeVectorStore(RankedSearch):
    """Same contract as `QdrantServerStore`, on an in-process Qdrant shard."""

    def __init__(self, path: Path) -> None:
        self._path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] = (path.parent / f"{path.name}.lock").open("w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            self._lock_file.close()
            raise StoreUnavailableError(
                f"the embedded vector store at {path} is in use by another Regulus process "
                "(e.g. `regulus serve`); stop it, use the API, or run a Qdrant server and set "
                "REGULUS_QDRANT_URL"
            ) from error
        self._writes = threading.Lock()
        self._shard: Any = edge.EdgeShard.load(str(path)) if (path / _META).is_file() else None

    def ensure_collection(self, dimension: int) -> None:
        if self._shard is not None:
            stored = json.loads((self._path / _META).read_text())["dimension"]
            if stored != dimension:
                raise StoreUnavailableError(
                    f"the store at {self._path} holds vectors of size {stored}, the embedder "
                    f"makes {dimension}: use another REGULUS_DATA_DIR or delete it and re-ingest"
                )
            return
        config = edge.EdgeConfig(
            vectors={
                DENSE_VECTOR: edge.EdgeVectorParams(size=dimension, distance=edge.Distance.Cosine)
            },
            sparse_vectors={SPARSE_VECTOR: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
            hnsw_config=edge.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10_000),
        )
        shard = edge.EdgeShard.create(str(self._path), config)
        for field in KEYWORD_FIELDS:
            shard.update(
                edge.UpdateOperation.create_field_index(field, edge.PayloadSchemaType.Keyword)
            )
        for field in DATE_FIELDS:
            shard.update(edge.UpdateOperation.create_field_index(field, edge.DatetimeIndexParams()))
        (self._path / _META).write_text(json.dumps({"dimension": dimension}))
        self._shard = shard

    def _count(self, query_filter: models.Filter | None = None) -> int:
        if self._shard is None:
            return 0
        request = edge.CountRequest(exact=True, filter=to_edge_filter(query_filter))
        return int(self._shard.count(request))

    def has_document(self, document_id: str, content_hash: str) -> bool:
        document = models.Filter(
            must=[match("document_id", document_id), match("content_hash", content_hash)]
        )
        return self._count(document) > 0

    def upsert(
        self, chunks: Sequence[Chunk], dense: np.ndarray, sparse: Sequence[models.SparseVector]
    ) -> None:
        points = [
            edge.Point(
                chunk.chunk_id,
                {
                    DENSE_VECTOR: dense_vector.tolist(),
                    SPARSE_VECTOR: edge.SparseVector(
                        indices=sparse_vector.indices, values=sparse_vector.values
                    ),
                },
                chunk_payload(chunk),
            )
            for chunk, dense_vector, sparse_vector in zip(chunks, dense, sparse, strict=True)
        ]
        with self._writes:
            self._shard.update(edge.UpdateOperation.upsert_points(points))

    def _delete(self, query_filter: models.Filter) -> None:
        with self._writes:
            self._shard.update(
                edge.UpdateOperation.delete_points_by_filter(to_edge_filter(query_filter))
            )

    def delete_document(self, document_id: str) -> int:
        document = models.Filter(must=[match("document_id", document_id)])
        found = self._count(document)
        if found:
            self._delete(document)
        return found

    def delete_other_versions(self, document_id: str, content_hash: str) -> None:
        self._delete(
            models.Filter(
                must=[match("document_id", document_id)],
                must_not=[match("content_hash", content_hash)],
            )
        )

    def update_document_fields(self, document_id: str, fields: DocumentFields) -> None:
        document = to_edge_filter(models.Filter(must=[match("document_id", document_id)]))
        with self._writes:  # one operation: the shard applies it whole, or not at all
            self._shard.update(
                edge.UpdateOperation.set_payload_by_filter(
                    document, document_fields_payload(fields)
                )
            )

    def chunks(self, document_id: str | None = None) -> list[Chunk]:
        if self._shard is None:
            return []
        selector = models.Filter(must=[match("document_id", document_id)]) if document_id else None
        chunks: list[Chunk] = []
        offset = None
        while True:
            page, offset = self._shard.scroll(
                edge.ScrollRequest(
                    limit=_SCROLL_PAGE,
                    offset=offset,
                    filter=to_edge_filter(selector),
                    with_payload=True,
                    with_vector=False,
                )
            )
            chunks.extend(Chunk.model_validate(record.payload) for record in page)
            if offset is None:
                return sorted(chunks, key=lambda chunk: chunk.chunk_id)

    def count(self) -> int:
        return self._count()

    def _nearest(
        self, queries: Sequence[NearestQuery], query_filter: models.Filter, limit: int
    ) -> list[list[Scored]]:
        if self._shard is None:
            return [[] for _ in queries]
        selector = to_edge_filter(query_filter)
        dense_params = edge.SearchParams(exact=True)
        sparse_params = edge.SearchParams(
            exact=True, idf=edge.IdfParams(corpus=to_edge_filter(IDF_CORPUS))
        )
        requests = [
            edge.QueryRequest(
                query=edge.Query.Nearest(
                    edge.SparseVector(indices=vector.indices, values=vector.values)
                    if isinstance(vector, models.SparseVector)
                    else vector,
                    using=using,
                ),
                filter=selector,
                limit=limit,
                params=sparse_params if isinstance(vector, models.SparseVector) else dense_params,
                with_payload=False,
            )
            for using, vector in queries
        ]
        results = self._shard.query_batch(edge.QueryBatchRequest(requests))
        return [[(str(point.id), point.score) for point in points] for points in results]

    def _load(self, chunk_ids: Sequence[str]) -> dict[str, tuple[Chunk, list[float] | None]]:
        if self._shard is None or not chunk_ids:
            return {}
        records = self._shard.retrieve(
            list(chunk_ids), with_payload=True, with_vector=[DENSE_VECTOR]
        )
        return {
            str(record.id): (Chunk.model_validate(record.payload), dense_of(record.vector))
            for record in records
        }

    def optimize(self) -> None:
        """Merge segments after a batch of writes: faster queries; blocks the store for seconds."""
        if self._shard is not None:
            with self._writes:
                self._shard.optimize()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.flush()
            self._shard.close()
            self._shard = None
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
