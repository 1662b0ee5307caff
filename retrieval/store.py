"""The Qdrant collection that holds every chunk: embedded on disk by default, a server by URL."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import numpy as np
from qdrant_client import QdrantClient, models

from core.models import Chunk, RetrievedChunk
from core.settings import Settings

DENSE_VECTOR = "dense"
# Fixed namespace so that chunk ids are the same on every machine and every run.
CHUNK_ID_NAMESPACE = uuid.UUID("6f1c1d9e-54a3-4c1b-9a57-2d1f0e5b7c10")


class StoreUnavailableError(RuntimeError):
    pass


def chunk_point_id(document_id: str, section: str, ordinal: int) -> str:
    return str(uuid.uuid5(CHUNK_ID_NAMESPACE, f"{document_id}\x1f{section}\x1f{ordinal}"))


def _document_filter(document_id: str, content_hash: str | None = None) -> models.Filter:
    must: list[models.Condition] = [
        models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id))
    ]
    if content_hash is not None:
        must.append(
            models.FieldCondition(key="content_hash", match=models.MatchValue(value=content_hash))
        )
    return models.Filter(must=must)


class VectorStore:
    """Chunks with their dense vectors in one Qdrant collection; the payload is the chunk itself."""

    def __init__(self, settings: Settings) -> None:
        self.collection = settings.collection
        self._embedded = not settings.qdrant_url
        try:
            if settings.qdrant_url:
                self._client = QdrantClient(
                    url=settings.qdrant_url, api_key=settings.qdrant_api_key
                )
            else:
                settings.qdrant_path.mkdir(parents=True, exist_ok=True)
                self._client = QdrantClient(path=str(settings.qdrant_path))
        except RuntimeError as error:  # the embedded store allows one process at a time
            raise StoreUnavailableError(
                f"the embedded vector store at {settings.qdrant_path} is in use by another Regulus "
                "process (e.g. `regulus serve`); stop it, or run a Qdrant server and set "
                "REGULUS_QDRANT_URL"
            ) from error

    def ensure_collection(self, dimension: int) -> None:
        if self._client.collection_exists(self.collection):
            existing = self._client.get_collection(self.collection).config.params.vectors
            size = existing[DENSE_VECTOR].size if isinstance(existing, dict) else None
            if size != dimension:
                raise StoreUnavailableError(
                    f"collection {self.collection!r} holds vectors of size {size}, the embedder "
                    f"makes {dimension}: use another REGULUS_COLLECTION or re-create it"
                )
            return
        self._client.create_collection(
            self.collection,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(size=dimension, distance=models.Distance.COSINE)
            },
        )
        if self._embedded:
            return  # the embedded engine scans payloads and ignores indexes
        for field in ("document_id", "content_hash"):
            self._client.create_payload_index(
                self.collection, field, field_schema=models.PayloadSchemaType.KEYWORD
            )

    def has_document(self, document_id: str, content_hash: str) -> bool:
        if not self._client.collection_exists(self.collection):
            return False
        found = self._client.count(
            self.collection, count_filter=_document_filter(document_id, content_hash), exact=True
        )
        return found.count > 0

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        points = [
            models.PointStruct(
                id=chunk.chunk_id,
                vector={DENSE_VECTOR: vector.tolist()},
                payload=chunk.model_dump(),
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        self._client.upsert(self.collection, points=points, wait=True)

    def delete_other_versions(self, document_id: str, content_hash: str) -> None:
        """Remove the chunks of a document that do not belong to its current version."""
        self._client.delete(
            self.collection,
            points_selector=models.FilterSelector(
                filter=models.Filter(
                    must=_document_filter(document_id).must,
                    must_not=[
                        models.FieldCondition(
                            key="content_hash", match=models.MatchValue(value=content_hash)
                        )
                    ],
                )
            ),
            wait=True,
        )

    def count(self) -> int:
        if not self._client.collection_exists(self.collection):
            return 0
        return self._client.count(self.collection, exact=True).count

    def search(self, vector: np.ndarray, limit: int) -> list[RetrievedChunk]:
        if not self._client.collection_exists(self.collection):
            return []
        response = self._client.query_points(
            self.collection,
            query=vector.tolist(),
            using=DENSE_VECTOR,
            limit=limit,
            with_payload=True,
        )
        return [
            RetrievedChunk(chunk=Chunk.model_validate(point.payload), score=point.score)
            for point in response.points
        ]

    def close(self) -> None:
        self._client.close()
