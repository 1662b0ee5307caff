"""The retriever: configure once, then `run(query, principal, filters)` returns ranked chunks."""

from __future__ import annotations

from core.models import RetrievedChunk, SearchMode
from retrieval.embedder import Embedder
from retrieval.expansion import ReferenceExpander
from retrieval.filters import Principal, SearchFilters, build_filter
from retrieval.reranker import CrossEncoderReranker
from retrieval.sparse import BM25Encoder
from retrieval.store import VectorStore


class Retriever:
    """Dense, sparse (BM25) or hybrid search over the store, always filtered by access, then
    optionally re-scored by a cross-encoder over the best `rerank_candidates` fused hits, then
    optionally expanded with the passages the best hits cite."""

    def __init__(
        self,
        store: VectorStore,
        embedder: Embedder,
        sparse_encoder: BM25Encoder,
        mode: SearchMode = SearchMode.HYBRID,
        top_k: int = 5,
        candidates: int = 50,
        reranker: CrossEncoderReranker | None = None,
        rerank_candidates: int = 30,
        expander: ReferenceExpander | None = None,
    ) -> None:
        if top_k < 1 or candidates < 1 or rerank_candidates < 1:
            raise ValueError("top_k, candidates and rerank_candidates must be at least 1")
        self.reranker = reranker
        self.rerank_candidates = rerank_candidates
        self.expander = expander
        self._store = store
        self._embedder = embedder
        self._sparse_encoder = sparse_encoder
        self.mode = SearchMode(mode)
        self.top_k = top_k
        self.candidates = candidates

    def run(
        self,
        query: str,
        principal: Principal,
        filters: SearchFilters | None = None,
        top_k: int | None = None,
    ) -> list[RetrievedChunk]:
        if not query.strip():
            raise ValueError("the query is empty")
        dense = None if self.mode is SearchMode.SPARSE else self._embedder.embed_one(query)
        sparse = None if self.mode is SearchMode.DENSE else self._sparse_encoder.encode_query(query)
        limit = top_k or self.top_k
        pool = max(limit, self.rerank_candidates) if self.reranker else limit
        query_filter = build_filter(principal, filters)
        hits = self._store.search(
            dense=dense,
            sparse=sparse,
            limit=pool,
            query_filter=query_filter,
            candidates=max(self.candidates, pool),
        )
        if self.reranker and hits:
            hits = self.reranker.run(query, hits, top_k=limit)
        if self.expander and hits:
            hits = self.expander.run(
                hits, dense=dense, sparse=sparse, query_filter=query_filter, top_k=limit
            )
        return hits
