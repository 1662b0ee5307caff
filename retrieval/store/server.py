"""The store on a Qdrant server or cluster, through qdrant-client."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from core.models import Chunk, DocumentFields
from core.settings import Settings
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


class QdrantServerStore(RankedSearch):
    """The store on a Qdrant server or cluster (or any client qdrant-client can open).

    `shards`, `replication_factor` and `write_consistency` apply when this store creates the
    collection; an existing collection keeps its own.
    """

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        shards: int = 1,
        replication_factor: int = 1,
        write_consistency: int = 1,
    ) -> None:
        if min(shards, replication_factor, write_consistency) < 1:
            raise ValueError("shards, replication factor and write consistency must be at least 1")
        if write_consistency > replication_factor:
            raise ValueError(
                f"write consistency {write_consistency} needs at least as many replicas, "
                f"not {replication_factor}"
            )
        self.collection = collection
        self._client = client
        self._shards = shards
        self._replication_factor = replication_factor
        self._write_consistency = write_consistency

    @classmethod
    def from_settings(cls, settings: Settings) -> QdrantServerStore:
        if not settings.qdrant_url:
            raise ValueError("QdrantServerStore needs REGULUS_QDRANT_URL")
        client = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key)
        return cls(
            client,
            settings.collection,
            shards=settings.qdrant_shards,
            replication_factor=settings.qdrant_replication_factor,
            write_consistency=settings.qdrant_write_consistency,
        )

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
            shard_number=self._shards,
            replication_factor=self._replication_factor,
            write_consistency_factor=self._write_consistency,
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
            must=[match("document_id", document_id), match("content_hash", content_hash)]
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
        document = models.Filter(must=[match("document_id", document_id)])
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
                    must=[match("document_id", document_id)],
                    must_not=[match("content_hash", content_hash)],
                )
            ),
            wait=True,
        )

    def update_document_fields(self, document_id: str, fields: DocumentFields) -> None:
        """One set-payload operation over the document's chunks (keys not named are kept)."""
        self._client.set_payload(
            self.collection,
            payload=document_fields_payload(fields),
            points=models.FilterSelector(
                filter=models.Filter(must=[match("document_id", document_id)])
            ),
            wait=True,
        )

    def chunks(self, document_id: str | None = None) -> list[Chunk]:
        """Every stored chunk (of one document), in id order."""
        if not self._client.collection_exists(self.collection):
            return []
        selector = models.Filter(must=[match("document_id", document_id)]) if document_id else None
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

    def _nearest(
        self, queries: Sequence[NearestQuery], query_filter: models.Filter, limit: int
    ) -> list[list[Scored]]:
        if not self._client.collection_exists(self.collection):
            return [[] for _ in queries]
        live_idf = models.SearchParams(idf=models.IdfCorpusParams(corpus=IDF_CORPUS))
        requests = [
            models.QueryRequest(
                query=vector,
                using=using,
                filter=query_filter,
                limit=limit,
                params=live_idf if isinstance(vector, models.SparseVector) else None,
                with_payload=False,
            )
            for using, vector in queries
        ]
        responses = self._client.query_batch_points(self.collection, requests=requests)
        return [[(str(point.id), point.score) for point in r.points] for r in responses]

    def _load(self, chunk_ids: Sequence[str]) -> dict[str, tuple[Chunk, list[float] | None]]:
        if not chunk_ids:
            return {}
        records = self._client.retrieve(
            self.collection, list(chunk_ids), with_payload=True, with_vectors=[DENSE_VECTOR]
        )
        return {
            str(record.id): (Chunk.model_validate(record.payload), dense_of(record.vector))
            for record in records
        }

    def optimize(self) -> None:
        """The server optimizes in the background."""

    def close(self) -> None:
        self._client.close()
