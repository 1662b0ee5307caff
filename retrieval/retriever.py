"""Dense retriever: configure once, then `run(query, top_k)` returns ranked chunks."""

from __future__ import annotations

from core.models import RetrievedChunk
from retrieval.embedder import Embedder
from retrieval.store import VectorStore


class DenseRetriever:
    def __init__(self, store: VectorStore, embedder: Embedder, top_k: int = 5) -> None:
        if top_k < 1:
            raise ValueError("top_k must be at least 1")
        self._store = store
        self._embedder = embedder
        self.top_k = top_k

    def run(self, query: str, top_k: int | None = None) -> list[RetrievedChunk]:
        if not query.strip():
            raise ValueError("the query is empty")
        return self._store.search(self._embedder.embed_one(query), limit=top_k or self.top_k)
