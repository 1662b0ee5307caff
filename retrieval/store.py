"""The Qdrant collection that holds every chunk: embedded on disk by default, a server by URL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from qdrant_client import QdrantClient, models

from core.models import Chunk, FusionMethod, RetrievedChunk
from core.settings import Settings
from retrieval.references import reference_payload

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


class StoreUnavailableError(RuntimeError):
    pass


def chunk_point_id(document_id: str, section: str, ordinal: int) -> str:
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, f"{document_id}\x1f{section}\x1f{ordinal}"))


def chunk_payload(chunk: Chunk) -> dict[str, object]:
    """The chunk itself, plus the keys that cross-references to it are looked up by."""
    return chunk.model_dump(mode="json") | reference_payload(chunk)


def _match(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


class VectorStore(Protocol):
    """Chunks with dense and sparse vectors; the payload is the chunk itself.

    Two deployments behind one contract: a Qdrant server (`QdrantServerStore`) and Qdrant's
    engine embedded in the process (`retrieval.edge_store.EdgeVectorStore`, the default).
    """

    def ensure_collection(self, dimension: int) -> None: ...
    def has_document(self, document_id: str, content_hash: str) -> bool: ...
    def upsert(
        self, chunks: Sequence[Chunk], dense: np.ndarray, sparse: Sequence[models.SparseVector]
    ) -> None: ...
    def delete_document(self, document_id: str) -> int: ...
    def delete_other_versions(self, document_id: str, content_hash: str) -> None: ...
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


def open_vector_store(settings: Settings) -> VectorStore:
    """A Qdrant server when REGULUS_QDRANT_URL is set, else the embedded engine in data_dir."""
    if settings.qdrant_url:
        return QdrantServerStore(settings)
    from retrieval.edge_store import EdgeVectorStore

    return EdgeVectorStore(settings.qdrant_path)


class QdrantServerStore:
    """The store on a Qdrant server, through qdrant-client."""

    def __init__(self, settings: Settings) -> None:
        if not settings.qdrant_url:
            raise ValueError("QdrantServerStore needs REGULUS_QDRANT_URL")
        self.collection = settings.collection
        self._client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)

    def ensure_collection(self, dimension: int) -> None:
        if self._client.collection_exists(self.collection):
            params = self._client.get_collection(self.collection).config.params
            dense = params.vectors.get(DENSE_VECTOR) if isinstance(params.vectors, dict) else None
            sparse = (params.sparse_vectors or {}).get(SPARSE_VECTOR)
            if dense is None or dense.size != dimension or sparse is None:
                raise StoreUnavailableError(
                    f"collection {self.collection!r} was built with other vectors than this "
                    f"version makes ({DENSE_VECTOR!r} of size {dimension} and {SPARSE_VECTOR!r}): "
                    "use another REGULUS_COLLECTION or delete the data folder and re-ingest"
                )
            return
        self._client.create_collection(
            self.collection,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={
                SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
            },
        )
        for field in KEYWORD_FIELDS:
            self._client.create_payload_index(
                self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD
            )
        for field in DATE_FIELDS:
            self._client.create_payload_index(
                self.collection, field, field_schema=models.PayloadSchemaType.DATETIME
            )

    def has_document(self, document_id: str, content_hash: str) -> bool:
        if not self._client.collection_exists(self.collection):
            return False
        document = models.Filter(
            must=[_match("document_id", document_id), _match("content_hash", content_hash)]
        )
        return self._client.count(self.collection, count_filter=document, exact=True).count > 0

    def upsert(
        self,
        chunks: Sequence[Chunk],
        dense: np.ndarray,
        sparse: Sequence[models.SparseVector],
    ) -> None:
        points = [
            models.PointStruct(
                id=chunk.chunk_id,
                vector={DENSE_VECTOR: dense_vector.tolist(), SPARSE_VECTOR: sparse_vector},
                payload=chunk_payload(chunk),
            )
            for chunk, dense_vector, sparse_vector in zip(chunks, dense, sparse, strict=True)
        ]
        self._client.upsert(self.collection, points=points, wait=True)

    def delete_document(self, document_id: str) -> int:
        """Remove every chunk of a document; returns how many there were."""
        if not self._client.collection_exists(self.collection):
            return 0
        document = models.Filter(must=[_match("document_id", document_id)])
        found = self._client.count(self.collection, count_filter=document, exact=True).count
        self._client.delete(
            self.collection, points_selector=models.FilterSelector(filter=document), wait=True
        )
        return found

    def delete_other_versions(self, document_id: str, content_hash: str) -> None:
        """Remove the chunks of a document that do not belong to its current version."""
        self._client.delete(
            self.collection,
            points_selector=models.FilterSelector(
                filter=models.Filter(
                    must=[_match("document_id", document_id)],
                    must_not=[_match("content_hash", content_hash)],
                )
            ),
            wait=True,
        )

    def chunks(self, document_id: str | None = None) -> list[Chunk]:
        """Every stored chunk (of one document), in id order."""
        if not self._client.collection_exists(self.collection):
            return []
        selector = models.Filter(must=[_match("document_id", document_id)]) if document_id else None
        chunks: list[Chunk] = []
        offset: models.ExtendedPointId | None = None
        while True:
            points, offset = self._client.scroll(
                self.collection,
                scroll_filter=selector,
                limit=1000,
                offset=offset,
                with_payload=True,
                with_vectors=False,
            )
            chunks.extend(Chunk.model_validate(point.payload) for point in points)
            if offset is None:
                return chunks

    def count(self) -> int:
        if not self._client.collection_exists(self.collection):
            return 0
        return self._client.count(self.collection, exact=True).count

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
        if not self._client.collection_exists(self.collection):
            return []
        if dense is not None and sparse is not None:
            response = self._client.query_points(
                self.collection,
                prefetch=[
                    models.Prefetch(
                        query=dense.tolist(),
                        using=DENSE_VECTOR,
                        limit=candidates,
                        filter=query_filter,
                    ),
                    models.Prefetch(
                        query=sparse, using=SPARSE_VECTOR, limit=candidates, filter=query_filter
                    ),
                ],
                query=models.FusionQuery(fusion=models.Fusion(fusion.value)),
                limit=limit,
                with_payload=True,
            )
        elif dense is not None or sparse is not None:
            response = self._client.query_points(
                self.collection,
                query=dense.tolist() if dense is not None else sparse,
                using=DENSE_VECTOR if dense is not None else SPARSE_VECTOR,
                query_filter=query_filter,
                limit=limit,
                with_payload=True,
            )
        else:
            raise ValueError("search needs a dense or a sparse query vector")
        return [
            RetrievedChunk(chunk=Chunk.model_validate(point.payload), score=point.score)
            for point in response.points
        ]

    def optimize(self) -> None:
        """The server optimizes in the background."""

    def close(self) -> None:
        self._client.close()
