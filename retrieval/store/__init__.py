"""The Qdrant collection that holds every chunk: embedded on disk by default, a server by URL."""

from __future__ import annotations

from core.settings import Settings
from retrieval.store.base import (
    StoreUnavailableError,
    VectorStore,
    chunk_payload,
    chunk_point_id,
)

__all__ = [
    "StoreUnavailableError",
    "VectorStore",
    "chunk_payload",
    "chunk_point_id",
    "open_vector_store",
]


def open_vector_store(settings: Settings) -> VectorStore:
    """A Qdrant server when REGULUS_QDRANT_URL is set, else the embedded engine in data_dir."""
    if settings.qdrant_url:
        from retrieval.store.server import QdrantServerStore

        return QdrantServerStore.from_settings(settings)
    from retrieval.store.edge import EdgeVectorStore

    return EdgeVectorStore(settings.qdrant_path)
